"""Which frozen Lite0 features make the best few-shot probe on ELPV `elpv-defect`? (an ablation for the
few-shot L2 goal of +0.15 AUROC over the from-scratch CNN)

The product's probe reads the pooled 1280-d head embedding. Cracks and dark cell regions are local, and
the screening bench found mid-level maps (blocks 4/10/14) much better for anomaly scores, so this bench
asks whether pooled mid-level maps also make a better *supervised* few-shot probe. Features of every
train/val/test image are computed once at the cells' native 300 px (cached in the bench home as
safetensors); each map is pooled three ways (mean, max, GeM p=3). Per (arm, k labels per class, seed),
the same seeded few-shot draw as bench/fewshot.py (`load_task_data(shots=k, seed=s)`); a logistic
regression (scikit-learn, balanced class weights, features standardised on the k-shot train set, C from
a grid by validation log-loss); test AUROC / AP / recall at precision 0.9 (threshold from validation).
The from-scratch CNN cells are read from bench/results/fewshot.json (same split, same draws).

    MODELFAB_BENCH_HOME=bench/.home .venv/bin/python bench/fewshot_features.py [--sizes 10,20,30,40] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import track

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultFile, fewshot_table, mean_ci, plot_curves

from modelfab.core.config import Settings
from modelfab.evaluate import choose_threshold_for_precision, compute_metrics
from modelfab.store.store import Store
from modelfab.tune.data import TaskData, item_inputs, load_task_data
from modelfab.zoo.catalog import build_backbone
from modelfab.zoo.vision.lite_backbone import LITE_MEAN, LITE_STD
from modelfab.zoo.vision.preprocess import preprocess_images

TASK = "elpv-defect"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home"))
OUT = Path(__file__).parent / "results" / "fewshot_features.json"
SCRATCH = Path(__file__).parent / "results" / "fewshot.json"
MAPS = ("block4", "block10", "block14")
POOLS = ("mean", "max", "gem")
# arm -> [(feature, pools)]; "pooled" is the product probe's 1280-d head embedding
ARMS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "pooled-head": [("pooled", ())],
    "b14 mean+max": [("block14", ("mean", "max"))],
    "b10+14 mean+max": [("block10", ("mean", "max")), ("block14", ("mean", "max"))],
    "b4+10+14 mean+max": [("block4", ("mean", "max")), ("block10", ("mean", "max")), ("block14", ("mean", "max"))],
    "b10+14 gem": [("block10", ("gem",)), ("block14", ("gem",))],
}
C_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0)


def pooled_maps(feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(N, C, H, W) maps -> (N, C) per pooling: mean, max and GeM (p = 3 on the positive part)."""
    out = {"pooled": feats["pooled"]}
    for name in MAPS:
        v = feats[name]  # (N, C, H, W)
        out[f"{name}.mean"] = v.mean((2, 3))
        out[f"{name}.max"] = v.amax((2, 3))
        out[f"{name}.gem"] = v.clamp(min=0).pow(3).mean((2, 3)).pow(1 / 3)
    return out


def features(st: Store, data: TaskData, size: int, console: Console) -> dict[str, dict[str, torch.Tensor]]:
    """{split: {feature: (N, D)}} for every labeled item, cached as safetensors in the bench home."""
    from safetensors.torch import load_file, save_file

    bb = build_backbone("efficientnet-lite0")
    bb.net.eval()
    out: dict[str, dict[str, torch.Tensor]] = {}
    for split in ("train", "val", "test"):
        rows = data.split(split).rows
        path = HOME / f"fewshot-features-{TASK}-{split}-{size}px.safetensors"
        if path.exists():
            cached = load_file(path)
            if cached["n"].item() == len(rows):
                out[split] = cached
                continue
        parts: dict[str, list[torch.Tensor]] = {}
        t0 = time.perf_counter()
        for i in track(range(0, len(rows), 32), description=f"features {split} @ {size} px", console=console):
            x = preprocess_images(item_inputs(st, rows[i : i + 32], "image"), size, LITE_MEAN, LITE_STD)
            with torch.inference_mode():
                for k, v in pooled_maps(bb.features(x, [*MAPS, "pooled"])).items():
                    parts.setdefault(k, []).append(v)
        out[split] = {k: torch.cat(v).contiguous() for k, v in parts.items()}
        out[split]["n"] = torch.tensor(len(rows))
        save_file(out[split], path)
        console.print(f"{split}: {len(rows)} images in {time.perf_counter() - t0:.0f} s")
    return out


def matrix(feats: dict[str, torch.Tensor], spec: list[tuple[str, tuple[str, ...]]], index: list[int] | None) -> Any:
    cols = [feats[name] if not pools else torch.cat([feats[f"{name}.{p}"] for p in pools], 1) for name, pools in spec]
    x = torch.cat(cols, 1).numpy()
    return x if index is None else x[index]


def fit_probe(x_tr: Any, y_tr: Any, x_val: Any, y_val: Any) -> tuple[Any, Any]:
    """Balanced logistic regression on features standardised on the train set, C by validation
    log-loss: (model, scaler)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    best: tuple[float, Any] | None = None
    for c in C_GRID:
        m = LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(scaler.transform(x_tr), y_tr)
        loss = log_loss(y_val, m.predict_proba(scaler.transform(x_val)), labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, m)
    assert best is not None
    return best[1], scaler


def cell(full: TaskData, shot: TaskData, feats: dict[str, dict[str, torch.Tensor]],
         spec: list[tuple[str, tuple[str, ...]]]) -> dict[str, float]:
    pos = full.positive if full.positive is not None else 1
    where = {r.key: i for i, r in enumerate(full.split("train").rows)}
    x_tr = matrix(feats["train"], spec, [where[r.key] for r in shot.split("train").rows])
    y_tr = shot.split("train").y.numpy()
    x_val, y_val = matrix(feats["val"], spec, None), full.split("val").y.numpy()
    x_te, y_te = matrix(feats["test"], spec, None), full.split("test").y.numpy()
    model, scaler = fit_probe(x_tr, y_tr, x_val, y_val)
    p_val = model.predict_proba(scaler.transform(x_val))
    p_te = model.predict_proba(scaler.transform(x_te))
    thr = choose_threshold_for_precision(y_val == pos, p_val[:, pos], 0.9, strict=False)
    met = compute_metrics(y_te, p_te, full.classes, positive=pos, precision_thresholds={0.9: thr})
    return {"auroc": float(met.auroc or 0.0), "ap": float(met.ap or 0.0),
            "recall@p0.9": float(met.recall_at_precision[0].achieved.recall), "C": float(model.C),
            "dims": int(x_tr.shape[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,20,30,40")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    full = load_task_data(st, "elpv", TASK)
    split_hash = full.version.split_info.get("hash")
    results = ResultFile(OUT, {"benchmark": "fewshot-features", "task": TASK, "split_hash": split_hash,
                               "image_size": args.image_size, "backbone": "efficientnet-lite0 (frozen)",
                               "probe": "sklearn LogisticRegression, balanced, C by val log-loss",
                               "c_grid": list(C_GRID), "seeds": list(range(args.seeds))})
    feats = features(st, full, args.image_size, console)
    sizes = [int(s) for s in args.sizes.split(",")]
    for shots in sizes:
        for seed in range(args.seeds):
            shot = load_task_data(st, "elpv", TASK, shots=shots, seed=seed)
            for arm, spec in ARMS.items():
                key = f"{arm}/{shots}/{seed}"
                if not results.done(key):
                    results.put(key, {"arm": arm, "shots": shots, "seed": seed, **cell(full, shot, feats, spec)})
    cells = list(results.data["cells"].values())
    scratch = [c for c in json.loads(SCRATCH.read_text())["cells"].values() if c["arm"] == "scratch"]
    for c in scratch:
        cells.append({**c, "arm": "scratch CNN (bench/fewshot.py)"})
    arms = [*ARMS, "scratch CNN (bench/fewshot.py)"]
    table, curves = fewshot_table(cells, arms, f"few-shot probe features, {TASK} test (split {split_hash})")
    console.print(table)
    gaps = {}
    for shots in sizes:
        sc, _ = mean_ci([c["auroc"] for c in scratch if c["shots"] == shots])
        best_arm = max(ARMS, key=lambda a: mean_ci([c["auroc"] for c in cells if c["arm"] == a
                                                    and c["shots"] == shots])[0])
        m, _ = mean_ci([c["auroc"] for c in cells if c["arm"] == best_arm and c["shots"] == shots])
        gaps[str(shots)] = {"best_arm": best_arm, "best_auroc": m, "scratch_auroc": sc, "gap": m - sc}
        console.print(f"{shots}/class: best {best_arm} {m:.3f} - scratch {sc:.3f} = {m - sc:+.3f}")
    results.data["gap_over_scratch"] = gaps
    results.save()
    plot_curves(curves, OUT.with_suffix(".png"), "ELPV few-shot: which frozen Lite0 features", "labels per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
