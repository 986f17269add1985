"""Active-learning benchmark on ELPV (elpv-defect, official split): test AUROC versus the number of
labeled train images, per selector, mean and 95% interval over seeds.

Protocol (per seed): start from 10 labeled train images per class (the same seeded draw as
bench/fewshot.py), then rounds of +20 labels chosen by a selector from the rest of the train split
(the "labeler" reveals the true class), up to 200 labels. After every round a logistic-regression
probe (modelfab.screen.probe.make_probe: standardised, C=0.01 chosen on val, class-balanced) is fitted on the
labeled images' frozen Lite0 features (224 px, the tune feature cache) and scored on the test split.
The uncertainty of the pool comes from that same probe. Selectors are the library's SELECTORS
entries with their default configs (hybrid: top 4 x budget uncertain, then k-center), plus hybrid variants.

Resumable: every finished (selector, seed) curve is saved to bench/results/active.json at once.
Usage: python bench/active.py [--arms random,hybrid,hybrid:candidates=10] [--seeds 10]
(-P: bench/ holds a select.py that would shadow the standard library's select module.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.append(str(Path(__file__).parent))  # appended: bench/ must not shadow stdlib modules
from common import ResultFile, mean_ci, plot_curves

from modelfab.core.config import Settings
from modelfab.data import import_elpv, task_labels
from modelfab.screen.probe import make_probe
from modelfab.screen.select import Pool, build_selector
from modelfab.store.store import Store
from modelfab.tune.api import feature_getter, load_base
from modelfab.tune.data import few_shot, load_task_data

TASK = "elpv-defect"
OUT = Path(__file__).parent / "results" / "active.json"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home-active"))
ORDER = ["random", "uncertainty", "diversity", "hybrid", "badge"]
ARMS = "random,uncertainty,diversity,hybrid,hybrid:candidates=10,hybrid:candidates=20,badge"


def bench_store() -> Store:
    from modelfab.zoo.registry import register_foundation

    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    import_elpv(st, "elpv")
    register_foundation(st, "efficientnet-lite0", name="lite0")
    return st


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def parse_arm(arm: str) -> tuple[str, dict[str, Any]]:
    """``hybrid:candidates=10,measure=margin`` -> ("hybrid", {"candidates": 10.0, "measure": "margin"})."""
    name, _, spec = arm.partition(":")
    config: dict[str, Any] = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        try:
            config[key] = float(value)
        except ValueError:
            config[key] = value
    return name, config


@dataclass
class Split:
    x: np.ndarray  # (N, D) frozen features
    y: np.ndarray  # (N,) 1 = defective
    ambiguous: np.ndarray  # (N,) bool: defect probability 1/3 or 2/3 (the label is a coin flip at 0.5)


def run_curve(
    arm: str, seed: int, tr: Split, init: np.ndarray, va: Split, te: Split, step: int, until: int
) -> dict[str, Any]:
    """One selector, one seed: val and test AUROC after each round of ``step`` labels, up to ``until``."""
    name, config = parse_arm(arm)
    selector = build_selector(name, config)
    x_tr, y_tr = tr.x, tr.y
    labeled = np.zeros(len(x_tr), dtype=bool)
    labeled[init] = True
    points: list[dict[str, Any]] = []
    select_s = 0.0
    while True:
        probe = make_probe(seed=seed).fit(x_tr[labeled], y_tr[labeled])
        points.append(
            {
                "labels": int(labeled.sum()),
                "defects": int(y_tr[labeled].sum()),
                "ambiguous": int(tr.ambiguous[labeled].sum()),
                "val_auroc": auroc(va.y, probe.predict_proba(va.x)[:, 1]),
                "auroc": auroc(te.y, probe.predict_proba(te.x)[:, 1]),
            }
        )
        if labeled.sum() >= until:
            break
        pool = np.flatnonzero(~labeled)
        t0 = time.perf_counter()
        probs = probe.predict_proba(x_tr[pool]) if selector.needs_probabilities else None  # (P, 2)
        picked = selector.select(Pool(x_tr[pool], probs, x_tr[labeled]), step, seed=seed * 1000 + len(points))
        select_s += time.perf_counter() - t0
        labeled[pool[picked.indices]] = True  # the oracle labeler reveals the true class
    return {"arm": arm, "seed": seed, "points": points, "select_seconds": select_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=ARMS, help="selectors, optionally with config: hybrid:candidates=10")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--init", type=int, default=10, help="initial labels per class")
    ap.add_argument("--step", type=int, default=20, help="labels per round")
    ap.add_argument("--until", type=int, default=200, help="stop at this many labels")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    console = Console(width=200)
    st = bench_store()
    dv = st.get_dataset_version("elpv")
    data = load_task_data(st, "elpv", TASK)
    train = data.split("train")
    backbone, base = load_base(st, "lite0")
    features = feature_getter(st, backbone, base, "image")
    t0 = time.perf_counter()
    tr, va, te = (
        Split(
            features(data.split(s).rows).numpy(),  # (N, 1280) frozen, cached
            (data.split(s).y == data.positive).numpy().astype(int),
            np.array([0.0 < float(r.labels["probability"]) < 1.0 for r in data.split(s).rows]),
        )
        for s in ("train", "val", "test")
    )
    console.print(
        f"features: train {tr.x.shape}, val {va.x.shape}, test {te.x.shape} ({time.perf_counter() - t0:.0f} s)"
    )
    header = {
        "benchmark": "active",
        "task": TASK,
        "split_hash": dv.split_info["hash"],
        "dataset": f"elpv@{dv.version}",
        "init_per_class": args.init,
        "step": args.step,
        "until": args.until,
        "backbone": "lite0 (224 px, frozen)",
        "probe": "StandardScaler + LogisticRegression(C=0.01, class_weight=balanced)",
    }
    results = ResultFile(args.out, header)
    if not results.done("reference/all"):
        full = make_probe().fit(tr.x, tr.y)
        results.put(
            "reference/all",
            {
                "arm": "all-train",
                "labels": len(tr.y),
                "val_auroc": auroc(va.y, full.predict_proba(va.x)[:, 1]),
                "auroc": auroc(te.y, full.predict_proba(te.x)[:, 1]),
            },
        )
    labels = task_labels(train.rows, data.view)
    index = {r.key: i for i, r in enumerate(train.rows)}
    for seed in range(args.seeds):
        init = np.array([index[r.key] for r in few_shot(train.rows, labels, data.classes, args.init, seed)])
        for arm in args.arms.split(","):
            key = f"{arm}/{seed}"
            if results.done(key):
                continue
            t1 = time.perf_counter()
            cell = run_curve(arm, seed, tr, init, va, te, args.step, args.until)
            cell["seconds"] = time.perf_counter() - t1
            results.put(key, cell)
            last = cell["points"][-1]
            console.print(
                f"{key}: auroc {cell['points'][0]['auroc']:.3f} -> {last['auroc']:.3f} at {last['labels']} "
                f"labels, {last['defects']} defects ({cell['seconds']:.1f} s)"
            )
    report(results.data, console, args.out.with_suffix(".png"))
    return 0


def report(data: dict[str, Any], console: Console, png: Path) -> None:
    cells = [c for k, c in data["cells"].items() if not k.startswith("reference/")]
    arms = sorted(
        {c["arm"] for c in cells}, key=lambda a: (ORDER.index(parse_arm(a)[0]) if parse_arm(a)[0] in ORDER else 99, a)
    )
    sizes = sorted({p["labels"] for c in cells for p in c["points"]})
    shown = [s for s in sizes if s in (20, 40, 60, 100, 140) or s == sizes[-1]]
    table = Table(
        title=f"active learning {data['task']}: test AUROC vs labels (split {data['split_hash']}), "
        "mean ± 95% CI over seeds"
    )
    table.add_column("selector")
    for s in shown:
        table.add_column(f"{s} labels", justify="right")
    table.add_column("curve mean: val", justify="right")
    table.add_column("curve mean: test", justify="right")
    table.add_column(f"defects / ambiguous in {sizes[-1]}", justify="right")
    curves: dict[str, list[Any]] = {}
    for arm in arms:
        mine = [c for c in cells if c["arm"] == arm]
        row = []
        for s in sizes:
            vals = [p["auroc"] for c in mine for p in c["points"] if p["labels"] == s]
            m, h = mean_ci(vals)
            curves.setdefault(arm, []).append((s, m, h))
            if s in shown:
                row.append(f"{m:.3f} ± {h:.3f}")
        area = {k: mean_ci([float(np.mean([p[k] for p in c["points"]])) for c in mine]) for k in ("val_auroc", "auroc")}
        defects = mean_ci([c["points"][-1]["defects"] for c in mine])[0]
        ambiguous = mean_ci([c["points"][-1]["ambiguous"] for c in mine])[0]
        table.add_row(
            f"{arm} (n={len(mine)})",
            *row,
            *[f"{m:.3f} ± {h:.3f}" for m, h in area.values()],
            f"{defects:.0f} / {ambiguous:.0f}",
        )
    console.print(table)
    ref = data["cells"].get("reference/all")
    if ref:
        console.print(f"reference: probe on all {ref['labels']} train labels: test AUROC {ref['auroc']:.3f}")
    plot_curves(curves, png, f"ELPV {data['task']}: active learning (frozen Lite0 probe)", "labeled train images")
    console.print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
