"""Screening benchmark on ELPV (official split): anomaly scorers fitted on normal train images.

For every arm (scorer x backbone x layers x image size) the memory bank / Gaussian is fitted on
the probability-0 train images (normal under both tasks), every val / calibration / test image is
scored once, and both tasks are evaluated from those scores:
  - test image AUROC (and val AUROC, which is what choices are made on),
  - the threshold calibrated on the `calibration` split for recall >= 0.95 with 95% confidence
    (one-sided Clopper-Pearson, modelfab.screen.calibrate) -> fraction of normal TEST images
    filtered and the observed test recall,
  - the fraction of normal test images filtered at 100% test recall (the hardest defect decides),
  - fit / score seconds and the memory of the fitted state.
Ensembles: z-score averages (standardised on val normals) of the arms with the best val AUROC.

Features are cached per (backbone, image size) under the bench home, so arms are cheap to re-run;
each finished arm is written to bench/results/screen.json at once (resume = run again).
Usage: python bench/screen.py [--arms a,b] [--l1 MODEL --l1-home DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.append(str(Path(__file__).parent))
from common import ResultFile

from modelfab.core.config import Settings
from modelfab.data import import_elpv
from modelfab.data.images import load_rgb
from modelfab.data.tasks import get_task, task_labels
from modelfab.evaluate.curves import auroc
from modelfab.screen import build_scorer, calibrate_threshold
from modelfab.screen.features import join_maps, pool_features
from modelfab.store.store import Store
from modelfab.zoo.base import Backbone
from modelfab.zoo.registry import load_registered, register_foundation

OUT = Path(__file__).parent / "results" / "screen.json"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path.home() / ".cache" / "modelfab-bench" / "screen"))
TASKS = ("elpv-strict", "elpv-defect")
TAPS = ("block4", "block10", "block14", "pooled")
SEED = 0
console = Console()

# name -> (scorer, backbone key, image size, config); backbone key "l0" or "l1"
ARMS: dict[str, tuple[str, str, int, dict[str, Any]]] = {
    "knn b14 300": ("knn-memory", "l0", 300, {"layers": ["block14"]}),
    "knn b4 300": ("knn-memory", "l0", 300, {"layers": ["block4"]}),
    "knn b4+b10 300": ("knn-memory", "l0", 300, {"layers": ["block4", "block10"]}),
    "knn b10+b14 300": ("knn-memory", "l0", 300, {"layers": ["block10", "block14"]}),
    "knn b4+b10 300 p64": ("knn-memory", "l0", 300, {"layers": ["block4", "block10"], "proj_dim": 64}),
    "gauss b4+b10 300": ("gaussian", "l0", 300, {"layers": ["block4", "block10"]}),
    "gauss b10+b14 300": ("gaussian", "l0", 300, {"layers": ["block10", "block14"]}),
    "gauss b4+b10+b14 300": ("gaussian", "l0", 300, {"layers": ["block4", "block10", "block14"]}),
    "gauss b4+b10 300 p160": ("gaussian", "l0", 300, {"layers": ["block4", "block10"], "proj_dim": 160}),
    "gauss b4+b10+b14 300 p160": ("gaussian", "l0", 300, {"layers": ["block4", "block10", "block14"],
                                                         "proj_dim": 160}),
    "emb pooled 300": ("embedding-knn", "l0", 300, {"layers": ["pooled"]}),
    "emb b10+b14 300": ("embedding-knn", "l0", 300, {"layers": ["block10", "block14"]}),
    "knn b14 224": ("knn-memory", "l0", 224, {"layers": ["block14"]}),
    "knn b4+b10 224": ("knn-memory", "l0", 224, {"layers": ["block4", "block10"]}),
}
L1_ARMS = {
    "L1 knn b4+b10 300": ("knn-memory", "l1", 300, {"layers": ["block4", "block10"]}),
    "L1 gauss b4+b10 300": ("gaussian", "l1", 300, {"layers": ["block4", "block10"]}),
    "L1 emb pooled 300": ("embedding-knn", "l1", 300, {"layers": ["pooled"]}),
}


def bench_store(home: Path) -> Store:
    st = Store(Settings(home=home, db_url=f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts")))
    import_elpv(st, "elpv")
    register_foundation(st, "efficientnet-lite0", name="lite0")
    return st


def cached_taps(st: Store, bb: Backbone, tag: str, size: int, rows: list[Any]) -> dict[str, np.ndarray]:
    """Raw taps (float16) of ``rows`` at ``size``, computed once in chunks of 128 (resumable)."""
    folder = HOME / "features" / f"{tag}-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    keys = [r.key for r in rows]
    old = folder / "keys.json"
    if old.exists() and json.loads(old.read_text()) != keys:
        raise SystemExit(f"{folder}: cached features are for other items; delete the folder")
    old.write_text(json.dumps(keys))
    bb.input_spec = dataclasses.replace(bb.input_spec, image_size=size)
    bb.module.eval()
    bb.module.to(memory_format=torch.channels_last)  # ~1.7x faster eager convs on CPU
    parts: dict[str, list[np.ndarray]] = {t: [] for t in TAPS}
    t0 = time.perf_counter()
    for start in range(0, len(rows), 128):
        path = folder / f"chunk-{start:05d}.npz"
        if not path.exists():
            out: dict[str, list[np.ndarray]] = {t: [] for t in TAPS}
            for b in range(start, min(start + 128, len(rows)), 16):
                imgs = [load_rgb(st.artifacts.local_path(r.content_hash)) for r in rows[b : b + 16]]
                with torch.inference_mode():
                    x = bb.preprocess(imgs).contiguous(memory_format=torch.channels_last)
                    feats = bb.features(x, list(TAPS))
                for t in TAPS:
                    out[t].append(feats[t].contiguous().numpy().astype(np.float16))
            tmp = folder / f"chunk-{start:05d}.tmp.npz"
            np.savez(tmp, **{t: np.concatenate(v) for t, v in out.items()})
            tmp.replace(path)
            console.print(f"features {tag}@{size}: {min(start + 128, len(rows))}/{len(rows)} "
                          f"({time.perf_counter() - t0:.0f} s)")
        with np.load(path, allow_pickle=False) as z:
            for t in TAPS:
                parts[t].append(z[t])
    return {t: np.concatenate(v) for t, v in parts.items()}


def features_of(taps: dict[str, np.ndarray], idx: np.ndarray, kind: str, layers: list[str], smooth: int) -> Any:
    """Batches of joined features for the rows ``idx`` (what a Screener would feed the scorer)."""
    for s in range(0, len(idx), 32):
        sel = idx[s : s + 32]
        feats = {n: torch.from_numpy(taps[n][sel].astype(np.float32)) for n in layers}
        yield join_maps(feats, layers, smooth) if kind == "patch" else pool_features(feats, layers)


def task_truth(rows: list[Any], tasks: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per task: 1 defect, 0 normal, -1 left out (visible labels; ELPV labels are visible)."""
    out = {}
    for name in TASKS:
        view = get_task(tasks, name)
        labels = task_labels(rows, view)
        out[name] = np.array([-1 if r.key not in labels else int(labels[r.key] == view.positive) for r in rows])
    return out


def evaluate(scores: np.ndarray, split: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Val/test AUROC, calibrated 0.95-recall operating point and the 100%-recall filter, per task."""
    res: dict[str, Any] = {}
    for task, y in truth.items():
        r: dict[str, Any] = {}
        for part in ("val", "test"):
            m = (split == part) & (y >= 0)
            r[f"{part}_auroc"] = float(auroc(y[m], scores[m]))
        cm = (split == "calibration") & (y >= 0)
        cal = calibrate_threshold(scores[cm & (y == 1)], 0.95, 0.95, scores[cm & (y == 0)])
        tn, td = scores[(split == "test") & (y == 0)], scores[(split == "test") & (y == 1)]
        r.update({
            "threshold": cal.threshold, "cal_defects": cal.defects, "cal_bound": cal.recall_bound,
            "cal_normals_filtered": cal.normals_filtered,
            "test_normals_filtered@cal95": float((tn < cal.threshold).mean()),
            "test_recall@cal95": float((td >= cal.threshold).mean()),
            "test_normals_filtered@recall1": float((tn < td.min()).mean()),
            "test_defects": len(td), "test_normals": len(tn),
        })
        res[task] = r
    return res


def run_arm(name: str, spec: tuple[str, str, int, dict[str, Any]], taps: dict[str, np.ndarray],
            fit_idx: np.ndarray, eval_idx: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    scorer_name, _, size, cfg = spec
    scorer = build_scorer(scorer_name, {**cfg, "image_size": size, "seed": SEED})
    c = scorer.config
    t0 = time.perf_counter()
    scorer.fit(features_of(taps, fit_idx, scorer.kind, c.layers, c.smooth))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = np.concatenate([scorer.score(f).scores.numpy() for f in
                             features_of(taps, eval_idx, scorer.kind, c.layers, c.smooth)])
    score_s = time.perf_counter() - t0
    info = {"scorer": scorer_name, "config": c.model_dump(), "fit_s": fit_s, "score_s": score_s,
            "score_ms_per_image": 1000 * score_s / len(eval_idx), "fitted": scorer.meta()}
    console.print(f"{name}: fit {fit_s:.1f} s, score {score_s:.1f} s")
    return scores, info


def zscore(scores: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (scores - ref.mean()) / max(float(ref.std()), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="", help="comma-separated arm names (default all)")
    ap.add_argument("--l1", default=None, help="an L1 model to add as arms (e.g. elpv-l1-simclr-last2)")
    ap.add_argument("--l1-home", default=None, help="MODELFAB_HOME holding --l1 (default the bench home)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-max", type=int, default=500, help="normal train images in the memory bank (seeded draw)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    st = bench_store(HOME)
    dv = st.get_dataset_version("elpv@1")
    rows_all = st.version_items(dv.id)
    truth_all = task_truth(rows_all, dv.tasks)
    normals = [r for r in rows_all if r.split == "train" and r.labels.get("probability") == 0.0]
    fit_rows = sorted(normals, key=lambda r: hashlib.sha256(f"{SEED}:{r.key}".encode()).hexdigest())[: args.fit_max]
    eval_rows = [r for r in rows_all if r.split in ("val", "calibration", "test")]
    rows = fit_rows + eval_rows
    fit_idx, eval_idx = np.arange(len(fit_rows)), np.arange(len(fit_rows), len(rows))
    split = np.array([r.split for r in eval_rows])
    truth = task_truth(eval_rows, dv.tasks)
    del truth_all
    arms = dict(ARMS)
    backbones: dict[str, tuple[Backbone, str]] = {}
    l0, l0_model = load_registered(st, "lite0")
    backbones["l0"] = (l0, f"lite0-{(l0_model.weights_digest or '')[:12]}")
    if args.l1:
        other = Store(Settings(home=Path(args.l1_home), db_url=f"sqlite:///{Path(args.l1_home) / 'modelfab.db'}",
                               artifacts_url=str(Path(args.l1_home) / "artifacts"))) if args.l1_home else st
        l1, l1_model = load_registered(other, args.l1)
        backbones["l1"] = (l1, f"{l1_model.name}-{(l1_model.weights_digest or '')[:12]}")
        arms.update(L1_ARMS)
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()] or sorted(arms, key=lambda a: arms[a][2] != 300)
    unknown = [a for a in chosen if a not in arms]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: {list(arms)}")
    header = {"split_hash": dv.split_info.get("hash"), "seed": SEED, "data": "elpv@1",
              "fit_items": len(fit_rows), "normal_train": len(normals), "eval_items": len(eval_rows), "l1": args.l1}
    results = ResultFile(OUT, header)
    score_dir = HOME / "scores"
    score_dir.mkdir(parents=True, exist_ok=True)
    taps_cache: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for name in chosen:
        spec = arms[name]
        score_file = score_dir / f"{name.replace(' ', '_').replace('+', '-')}.npy"
        if results.done(name) and score_file.exists():
            continue
        key = (spec[1], spec[2])
        if key not in taps_cache:
            bb, tag = backbones[spec[1]]
            t0 = time.perf_counter()
            taps_cache[key] = cached_taps(st, bb, tag, spec[2], rows)
            console.print(f"taps {tag}@{spec[2]} ready in {time.perf_counter() - t0:.0f} s")
        scores, info = run_arm(name, spec, taps_cache[key], fit_idx, eval_idx)
        np.save(score_file, scores)
        results.put(name, {**info, "tasks": evaluate(scores, split, truth)})
    ensembles(results, score_dir, split, truth)
    report(results)


def ensembles(results: ResultFile, score_dir: Path, split: np.ndarray, truth: dict[str, np.ndarray]) -> None:
    """z-score averages of the 2 and 3 single arms with the best val AUROC (elpv-strict)."""
    singles = {k: v for k, v in results.data["cells"].items() if not k.startswith("ens ")}
    ranked = sorted(singles, key=lambda k: -singles[k]["tasks"]["elpv-strict"]["val_auroc"])
    val_normal = (split == "val") & (truth["elpv-strict"] == 0)
    for n in (2, 3):
        members = ranked[:n]
        if len(members) < n:
            continue
        zs = []
        for m in members:
            s = np.load(score_dir / f"{m.replace(' ', '_').replace('+', '-')}.npy")
            zs.append(zscore(s, s[val_normal]))
        scores = np.mean(zs, axis=0)
        results.put(f"ens top{n} (val)", {"members": members, "fit_s": sum(singles[m]["fit_s"] for m in members),
                                          "score_s": sum(singles[m]["score_s"] for m in members),
                                          "tasks": evaluate(scores, split, truth)})


def report(results: ResultFile) -> None:
    cells = results.data["cells"]
    for task in TASKS:
        t = Table(title=f"ELPV screening, {task} (official split; threshold calibrated on `calibration`)")
        for col in ("arm", "val AUROC", "test AUROC", "normals filtered @cal 0.95", "test recall @cal",
                    "filtered @100% recall", "fit s", "score ms/img", "state MB"):
            t.add_column(col, justify="left" if col == "arm" else "right")
        for name, c in cells.items():
            r = c["tasks"][task]
            fitted = c.get("fitted", {})
            mb = (fitted.get("bank_bytes") or fitted.get("state_bytes") or 0) / 2**20
            t.add_row(name, f"{r['val_auroc']:.3f}", f"{r['test_auroc']:.3f}",
                      f"{r['test_normals_filtered@cal95']:.1%}", f"{r['test_recall@cal95']:.3f}",
                      f"{r['test_normals_filtered@recall1']:.1%}", f"{c['fit_s']:.1f}",
                      f"{c.get('score_ms_per_image', float('nan')):.1f}", f"{mb:.1f}" if mb else "-")
        console.print(t)
    plot(cells, OUT.with_suffix(".png"))


def plot(cells: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(cells)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(names) + 1.5), sharey=True)
    y = np.arange(len(names))
    for ax, key, label in ((axes[0], "test_auroc", "test AUROC"),
                           (axes[1], "test_normals_filtered@cal95", "normal test images filtered @ cal. recall 0.95")):
        for off, task in ((-0.2, "elpv-strict"), (0.2, "elpv-defect")):
            ax.barh(y + off, [cells[n]["tasks"][task][key] for n in names], height=0.4, label=task)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].set_xlim(0.5, 1.0)
    axes[1].axvline(0.5, color="k", lw=0.8, ls="--")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
