"""``tune --auto`` with and without sharing the anomaly prior's pool pass between trials, on ELPV
``elpv-defect``: wall seconds of the whole search, and whether both arms pick the same model.

Each (seed, arm) cell searches in its own copy of one template store (ELPV imported, Lite0 registered,
frozen embeddings of every train and validation image already cached), so both arms start from the
same empty strategy history and neither pays for the embedding pass. With no history the default
order puts probe-linear, probe-mlp and probe-prior first; probe-prior wins on ELPV, and its Optuna
refinements (MLP heads) each fit the same prior again: ``recompute`` passes over the unlabeled pool
(1,443 train images) once per fit, ``reuse`` once per search. Arms alternate first/second by seed.

    .venv/bin/python bench/auto_reuse.py [--seeds 3] [--shots 10] [--optuna-trials 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultFile, mean_ci

from modelfab.core.config import Settings
from modelfab.data import import_elpv
from modelfab.store.store import Store
from modelfab.tune import TuneConfig
from modelfab.tune.api import feature_getter, load_base
from modelfab.tune.auto import auto_tune
from modelfab.tune.data import load_task_data
from modelfab.zoo.registry import register_foundation

TASK = "elpv-defect"
OUT = Path(__file__).parent / "results" / "auto_reuse.json"
ROOT = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home-auto"))
ARMS = ("recompute", "reuse")


def open_store(home: Path) -> Store:
    return Store(Settings(home=home, db_url=f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts")))


def template(console: Console) -> tuple[Path, dict[str, Any]]:
    """ELPV + Lite0, with every train and validation embedding in the feature cache."""
    home = ROOT / "template"
    st = open_store(home)
    import_elpv(st, "elpv")
    register_foundation(st, "efficientnet-lite0", name="lite0")
    data = load_task_data(st, "elpv", TASK)
    backbone, base_model = load_base(st, "lite0")
    features = feature_getter(st, backbone, base_model, "image")
    t0 = time.perf_counter()
    for split in ("train", "val"):
        features(data.split(split).rows)
    console.print(f"template store ready ({time.perf_counter() - t0:.0f} s of embeddings)")
    dv = st.get_dataset_version("elpv")
    info = {"split_hash": dv.split_info["hash"], "dataset": f"elpv@{dv.version}"}
    st.close()
    return home, info


def fresh_copy(src: Path, dst: Path) -> Path:
    """A copy of the template store: the database copied, artifacts and caches hard-linked (immutable)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("modelfab.db*"))
    shutil.copy2(src / "modelfab.db", dst / "modelfab.db")
    return dst


def run_cell(home: Path, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    st = open_store(home)
    t0 = time.perf_counter()
    res = auto_tune(st, base="lite0", data="elpv", name=f"auto-{arm}-{seed}",
                    cfg=TuneConfig(labels=TASK, shots=args.shots, seed=seed), budget_s=args.budget,
                    top=3, optuna_trials=args.optuna_trials, reuse_prior_vectors=arm == "reuse")
    seconds = time.perf_counter() - t0
    st.close()
    return {"arm": arm, "seed": seed, "seconds": seconds, "recipe": res.best.recipe or res.best.config.method,
            "val_score": res.best.score, "trials": [[t.recipe, t.score, t.seconds, t.overrides] for t in res.trials]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--optuna-trials", type=int, default=4)
    ap.add_argument("--budget", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    console = Console()
    home, info = template(console)
    results = ResultFile(args.out, {"benchmark": "auto-prior-reuse", "task": TASK, **info, "shots": args.shots,
                                    "optuna_trials": args.optuna_trials, "top": 3, "seeds": list(range(args.seeds))})
    for seed in range(args.seeds):
        for arm in ARMS if seed % 2 == 0 else tuple(reversed(ARMS)):
            key = f"{arm}/{seed}"
            if results.done(key):
                continue
            cell = run_cell(fresh_copy(home, ROOT / "cell"), arm, seed, args)
            results.put(key, cell)
            console.print(f"{key}: {cell['seconds']:.0f} s, {cell['recipe']} val {cell['val_score']:.4f}")
    report(results.data, console)
    results.save()
    return 0


def report(data: dict[str, Any], console: Console) -> None:
    cells = data["cells"]
    seeds = sorted({c["seed"] for c in cells.values()})
    table = Table(title=f"tune --auto on {data['dataset']} {data['task']}, {data['shots']} labels/class "
                        f"(split {data['split_hash']}; {data['machine']['cpu']}, {data['machine']['cores']} cores)")
    for col in ("seed", "recompute s", "reuse s", "recompute / reuse", "same model"):
        table.add_column(col, justify="right")
    ratios, same = [], []
    for s in seeds:
        a, b = cells.get(f"recompute/{s}"), cells.get(f"reuse/{s}")
        if not (a and b):
            continue
        ratios.append(a["seconds"] / b["seconds"])
        same.append(a["recipe"] == b["recipe"] and a["val_score"] == b["val_score"])
        table.add_row(str(s), f"{a['seconds']:.0f}", f"{b['seconds']:.0f}", f"{ratios[-1]:.2f}",
                      f"{'yes' if same[-1] else 'no'} ({b['recipe']}, val {b['val_score']:.4f})")
    console.print(table)
    if ratios:
        m, h = mean_ci(ratios)
        console.print(f"recompute / reuse wall time: {m:.2f} ± {h:.2f} (95% CI, n={len(ratios)}); "
                      f"same chosen model in {sum(same)}/{len(same)} seeds")
        data["summary"] = {"ratio_mean": m, "ratio_ci95": h, "same_model": sum(same), "seeds": len(same)}


if __name__ == "__main__":
    sys.exit(main())
