"""Few-shot ELPV `elpv-defect` with an anomaly prior: can a per-location Gaussian of patch features
(the screening bench's best scorer) close the few-shot L2's gap to +0.15 AUROC over the scratch CNN?

A defect is what a normal cell is not, and normal cells are what a plant has plenty of. This bench asks
how much the anomaly view adds to the supervised probe when labels are few:

- ``gauss-labeled``: the PaDiM-like Gaussian (`modelfab.screen.gaussian`) fitted on the k labeled
  *normal* images only (shrinkage chosen on validation AUROC from a small grid).
- ``gauss-pool``: fitted on the unlabeled train pool (every train image, labels unused: about 31% of it
  is defective), then trimmed: the most anomalous ``trim`` fraction of the pool is dropped and the
  Gaussian refitted (trim chosen on validation). Independent of k. Uses the same unlabeled images the
  L1 of bench/adapt.py was adapted on.
- ``probe``: the best frozen-feature probe of bench/fewshot_features.py (blocks 4+10+14 mean+max).
- ``fusion-labeled`` / ``fusion-pool``: ``a * z(probe logit) + (1 - a) * z(anomaly)``, each score
  standardised by its validation mean and spread, ``a`` chosen on validation AUROC.

Patch maps: frozen Lite0 at 300 px, blocks 4+10+14 smoothed 3x3, resized to block 4's 38x38 grid, a
seeded random projection to 100 dims (the screening arm's recipe); cached once (float16, bench home).
Same split and seeded few-shot draws as bench/fewshot.py; test split touched once per cell.

    MODELFAB_BENCH_HOME=bench/.home .venv/bin/python bench/fewshot_anomaly.py [--sizes 10,20,30,40] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultFile, fewshot_table, mean_ci, plot_curves
from fewshot_features import ARMS as PROBE_ARMS
from fewshot_features import features as pooled_features
from fewshot_features import fit_probe, matrix

from modelfab.core.config import Settings
from modelfab.evaluate import choose_threshold_for_precision, compute_metrics
from modelfab.screen.features import join_maps, make_projection
from modelfab.screen.gaussian import GaussianConfig, GaussianScorer
from modelfab.store.store import Store
from modelfab.tune.data import TaskData, item_inputs, load_task_data
from modelfab.zoo.catalog import build_backbone
from modelfab.zoo.vision.lite_backbone import LITE_MEAN, LITE_STD
from modelfab.zoo.vision.preprocess import preprocess_images

TASK = "elpv-defect"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home"))
OUT = Path(__file__).parent / "results" / "fewshot_anomaly.json"
SCRATCH = Path(__file__).parent / "results" / "fewshot.json"
LAYERS = ["block4", "block10", "block14"]
PROJ_DIM = 100
SHRINK_GRID = (0.1, 0.3, 0.6)
TRIM_GRID = (0.0, 0.2, 0.35, 0.5)
WEIGHT_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 11))
PROBE = "b4+10+14 mean+max"
ARMS = ("probe", "gauss-labeled", "gauss-pool", "fusion-labeled", "fusion-pool")


def patch_maps(st: Store, data: TaskData, size: int, console: Console) -> dict[str, torch.Tensor]:
    """{split: (N, 100, 38, 38) float16} projected joined patch maps, cached as safetensors."""
    from safetensors.torch import load_file, save_file

    bb = build_backbone("efficientnet-lite0")
    bb.net.eval()
    proj: torch.Tensor | None = None
    out: dict[str, torch.Tensor] = {}
    for split in ("train", "val", "test"):
        rows = data.split(split).rows
        path = HOME / f"fewshot-patches-{TASK}-{split}-{size}px.safetensors"
        if path.exists():
            cached = load_file(path)
            if len(cached["maps"]) == len(rows):
                out[split] = cached["maps"]
                continue
        parts: list[torch.Tensor] = []
        t0 = time.perf_counter()
        for i in track(range(0, len(rows), 16), description=f"patch maps {split} @ {size} px", console=console):
            x = preprocess_images(item_inputs(st, rows[i : i + 16], "image"), size, LITE_MEAN, LITE_STD)
            with torch.inference_mode():
                joined = join_maps(bb.features(x, LAYERS), LAYERS, smooth=3)  # (n, C, H, W)
                if proj is None:
                    proj = make_projection(joined.shape[1], PROJ_DIM, seed=0)
                v = torch.einsum("nchw,cd->ndhw", joined, proj)  # (n, 100, H, W)
            parts.append(v.half())
        out[split] = torch.cat(parts).contiguous()
        save_file({"maps": out[split]}, path)
        console.print(f"{split}: {len(rows)} images in {time.perf_counter() - t0:.0f} s")
    return out


def gaussian_scores(fit_maps: torch.Tensor, shrinkage: float, score: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Fit the Gaussian on ``fit_maps`` (N, D, H, W) and score every split given."""
    g = GaussianScorer(GaussianConfig(layers=LAYERS, proj_dim=None, shrinkage=shrinkage))
    g.fit(fit_maps[i : i + 64].float() for i in range(0, len(fit_maps), 64))
    return {k: torch.cat([g.score(v[i : i + 64].float()).scores for i in range(0, len(v), 64)]).numpy()
            for k, v in score.items()}


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def probe_scores(full: TaskData, shot: TaskData, feats: dict[str, dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """The frozen-feature probe's decision values on val and test (C by validation log-loss)."""
    spec = PROBE_ARMS[PROBE]
    where = {r.key: i for i, r in enumerate(full.split("train").rows)}
    x_tr = matrix(feats["train"], spec, [where[r.key] for r in shot.split("train").rows])
    x_val, x_te = matrix(feats["val"], spec, None), matrix(feats["test"], spec, None)
    model, scaler = fit_probe(x_tr, shot.split("train").y.numpy(), x_val, full.split("val").y.numpy())
    return {"val": model.decision_function(scaler.transform(x_val)),
            "test": model.decision_function(scaler.transform(x_te))}


def fuse(a: dict[str, np.ndarray], b: dict[str, np.ndarray], y_val: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """``w * z(a) + (1 - w) * z(b)`` with z by validation statistics and ``w`` by validation AUROC."""
    def z(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mu, sd = float(np.mean(s["val"])), float(np.std(s["val"]) or 1.0)
        return {k: (v - mu) / sd for k, v in s.items()}

    za, zb = z(a), z(b)
    w = max(WEIGHT_GRID, key=lambda w: auroc(y_val, w * za["val"] + (1 - w) * zb["val"]))
    return {k: w * za[k] + (1 - w) * zb[k] for k in ("val", "test")}, float(w)


def metrics(full: TaskData, s: dict[str, np.ndarray]) -> dict[str, float]:
    """Test AUROC / AP / recall at precision 0.9 (threshold from validation) of a binary score."""
    pos = full.positive if full.positive is not None else 1
    y_val, y_te = full.split("val").y.numpy(), full.split("test").y.numpy()
    # standardise by validation statistics first: raw Mahalanobis distances (40-120) would saturate the
    # sigmoid into ties; a monotone map keeps AUROC, AP and the threshold's rank
    mu, sd = float(np.mean(s["val"])), float(np.std(s["val"]) or 1.0)
    sig = {k: 1 / (1 + np.exp(-np.clip((v - mu) / sd, -50, 50))) for k, v in s.items()}
    thr = choose_threshold_for_precision(y_val == pos, sig["val"], 0.9, strict=False)
    probs = np.stack([1 - sig["test"], sig["test"]], 1) if pos == 1 else np.stack([sig["test"], 1 - sig["test"]], 1)
    met = compute_metrics(y_te, probs, full.classes, positive=pos, precision_thresholds={0.9: thr})
    return {"auroc": float(met.auroc or 0.0), "ap": float(met.ap or 0.0),
            "recall@p0.9": float(met.recall_at_precision[0].achieved.recall)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,20,30,40")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    full = load_task_data(st, "elpv", TASK)
    split_hash = full.version.split_info.get("hash")
    results = ResultFile(OUT, {"benchmark": "fewshot-anomaly", "task": TASK, "split_hash": split_hash,
                               "image_size": 300, "layers": LAYERS, "proj_dim": PROJ_DIM,
                               "shrink_grid": list(SHRINK_GRID), "trim_grid": list(TRIM_GRID),
                               "probe": PROBE, "seeds": list(range(args.seeds))})
    maps = patch_maps(st, full, 300, console)
    feats = pooled_features(st, full, 300, console)
    pos = full.positive if full.positive is not None else 1
    y_val = (full.split("val").y.numpy() == pos).astype(int)
    where = {r.key: i for i, r in enumerate(full.split("train").rows)}
    evals = {"val": maps["val"], "test": maps["test"]}
    sizes = [int(s) for s in args.sizes.split(",")]
    pool_cache: dict[Any, dict[str, np.ndarray]] = {}
    for shots in sizes:
        for seed in range(args.seeds):
            if all(results.done(f"{a}/{shots}/{seed}") for a in ARMS):
                continue
            t0 = time.perf_counter()
            shot = load_task_data(st, "elpv", TASK, shots=shots, seed=seed)
            idx = [where[r.key] for r in shot.split("train").rows]
            normals = [i for i, y in zip(idx, shot.split("train").y.tolist(), strict=True) if y != pos]
            probe = probe_scores(full, shot, feats)
            lab = {s: gaussian_scores(maps["train"][normals], s, evals) for s in SHRINK_GRID}
            shrink = max(SHRINK_GRID, key=lambda s: auroc(y_val, lab[s]["val"]))
            # the unlabeled pool: every train image; its labels are never read (trim by score)
            best_pool: tuple[float, tuple[float, float]] | None = None
            for trim in TRIM_GRID:
                key = (trim, 0.1)
                if key not in pool_cache:
                    if "first" not in pool_cache:
                        pool_cache["first"] = gaussian_scores(maps["train"], 0.1, {"train": maps["train"]})
                    first = pool_cache["first"]["train"]
                    keep = np.argsort(first)[: round(len(first) * (1 - trim))]
                    pool_cache[key] = gaussian_scores(maps["train"][torch.as_tensor(np.sort(keep))], 0.1, evals)
                v = auroc(y_val, pool_cache[key]["val"])
                if best_pool is None or v > best_pool[0]:
                    best_pool = (v, key)
            assert best_pool is not None
            pool = pool_cache[best_pool[1]]
            fl, wl = fuse(probe, lab[shrink], y_val)
            fp, wp = fuse(probe, pool, y_val)
            arms = {"probe": (probe, {}), "gauss-labeled": (lab[shrink], {"shrinkage": shrink}),
                    "gauss-pool": (pool, {"trim": best_pool[1][0]}),
                    "fusion-labeled": (fl, {"weight": wl, "shrinkage": shrink}),
                    "fusion-pool": (fp, {"weight": wp, "trim": best_pool[1][0]})}
            secs = time.perf_counter() - t0
            for arm, (s, extra) in arms.items():
                results.put(f"{arm}/{shots}/{seed}", {"arm": arm, "shots": shots, "seed": seed, **metrics(full, s),
                                                      "normals": len(normals), "seconds_all_arms": secs, **extra})
            console.print(f"{shots}/class seed {seed}: " + ", ".join(
                f"{a} {results.data['cells'][f'{a}/{shots}/{seed}']['auroc']:.3f}" for a in ARMS))
    cells = list(results.data["cells"].values())
    scratch = [c for c in json.loads(SCRATCH.read_text())["cells"].values() if c["arm"] == "scratch"]
    cells += [{**c, "arm": "scratch CNN (bench/fewshot.py)"} for c in scratch]
    arms_all = [*ARMS, "scratch CNN (bench/fewshot.py)"]
    table, curves = fewshot_table(cells, arms_all, f"few-shot with an anomaly prior, {TASK} test (split {split_hash})")
    console.print(table)
    gaps = {}
    for shots in sizes:
        sc, _ = mean_ci([c["auroc"] for c in scratch if c["shots"] == shots])
        for arm in ARMS:
            m, _ = mean_ci([c["auroc"] for c in cells if c["arm"] == arm and c["shots"] == shots])
            gaps.setdefault(arm, {})[str(shots)] = m - sc
        console.print(f"{shots}/class gap over scratch ({sc:.3f}): "
                      + ", ".join(f"{a} {gaps[a][str(shots)]:+.3f}" for a in ARMS))
    results.data["gap_over_scratch"] = gaps
    results.save()
    plot_curves(curves, OUT.with_suffix(".png"), "ELPV few-shot with an anomaly prior", "labels per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
