"""L1 adaptation benchmark on ELPV: does self-supervised adaptation improve the L0's features?

Arms: the L0 (EfficientNet-Lite0, ImageNet) and one or more L1 variants adapted on the official
train split's images without labels, each within a time budget.  For each arm and for the tasks
``elpv-defect`` and ``elpv-strict``: (a) logistic-regression probe AUROC with all train labels and
with 10/20/40 labels per class (5 seeds, mean and 95% interval); (b) kNN anomaly AUROC with a
memory bank of normal train images.  C and k are chosen on val; the L1 variant is chosen on val
(elpv-defect probe); test is reported once, for the L0 and the chosen L1.

Resumable per arm: features and adapted models persist under --home (default
~/.cache/modelfab-bench/adapt); a killed adaptation resumes from its last checkpoint.
Prints a table and writes bench/results/adapt.json (machine, split hash, seeds, timings).
Usage: python bench/adapt.py [--variants simclr-last2,byol-last2] [--budget 1200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from modelfab.adapt import AdaptConfig, adapt_model, run_dir_for
from modelfab.adapt.evaluate import Split, fewshot_probe, knn_anomaly_auroc, probe_auroc
from modelfab.core.config import Settings
from modelfab.core.machine import describe_machine
from modelfab.data import get_task, import_elpv, task_labels
from modelfab.data.images import load_rgb
from modelfab.store.store import Store
from modelfab.zoo import embed_items
from modelfab.zoo.registry import load_registered, register_foundation

OUT = Path(__file__).parent / "results" / "adapt.json"
TASKS = ("elpv-defect", "elpv-strict")
SHOTS = (10, 20, 40)
SEEDS = (0, 1, 2, 3, 4)
VARIANTS: dict[str, dict[str, Any]] = {
    # last two stages (blocks 11-15 + head) trained on 4 cached views of the frozen blocks 0-10
    "simclr-last2": dict(objective="simclr", steps=300, batch_size=64, lr=3e-4, cache_views=3, temperature=0.2),
    "byol-last2": dict(objective="byol", steps=300, batch_size=64, lr=3e-4, cache_views=3, ema=0.99),
    "simclr-last2-lora": dict(objective="simclr", steps=300, batch_size=64, lr=1e-3, cache_views=3, lora_rank=8),
}
console = Console(width=150)


def features(st: Store, ref: str, rows: list[Any], home: Path) -> np.ndarray:
    """Pooled embeddings of every ELPV image for model ``ref`` (cached per model id)."""
    model = st.get_model(ref)
    path = home / "features" / f"{model.weights_digest}.npy"  # same weights, same features
    if path.exists():
        return np.load(path)
    backbone, _ = load_registered(st, model.id)
    t0 = time.perf_counter()
    images = [load_rgb(st.artifacts.local_path(r.content_hash)) for r in rows]
    feats = embed_items(backbone, images, batch_size=32).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    console.print(f"embedded {len(rows)} images with {model.name} in {time.perf_counter() - t0:.0f} s")
    return feats


def evaluate(feats: np.ndarray, rows: list[Any], tasks: dict[str, Any], with_test: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in TASKS:
        labels = task_labels(rows, get_task(tasks, task))
        view = get_task(tasks, task)

        def split(name: str, labels: dict[str, str] = labels, view: Any = view) -> Split:
            idx = [i for i, r in enumerate(rows) if r.split == name and r.key in labels]
            y = np.array([labels[rows[i].key] == view.positive for i in idx], dtype=int)
            return Split(feats[idx], y)

        train, val, test = split("train"), split("val"), split("test")
        res: dict[str, Any] = {
            "n": {"train": len(train.y), "val": len(val.y), "test": len(test.y)},
            "probe_all": probe_auroc(train, val, test),
            "knn": knn_anomaly_auroc(train, val, test),
        }
        if with_test:
            res["fewshot"] = {str(k): fewshot_probe(train, val, test, k, SEEDS) for k in SHOTS}
        else:  # val-only selection: drop test numbers of unchosen arms
            res["probe_all"].pop("test_auroc")
            res["knn"].pop("test_auroc")
        out[task] = res
    return out


def run_variant(st: Store, name: str, overrides: dict[str, Any], budget: float, quick: bool) -> tuple[str, float]:
    l1_name = f"elpv-l1-{name}"
    try:
        model = st.get_model(l1_name)
        return model.id, float(model.metrics.get("train_seconds", 0))
    except Exception:
        pass
    cfg = AdaptConfig(
        **{
            **overrides,
            "time_budget_s": budget,
            "threads": 2,
            "checkpoint_every": 25,
            **({"max_items": 128, "steps": 4, "cache_views": 2} if quick else {}),
        }
    )
    resume = bool(list(run_dir_for(st, l1_name).glob("ckpt-*.json")))
    t0 = time.perf_counter()
    result = adapt_model(st, "elpv-l0", "elpv", l1_name, cfg, resume=resume, log=console.print)
    console.print(
        f"{l1_name}: {result.train.steps_done} steps, stopped by {result.train.stopped}, "
        f"{time.perf_counter() - t0:.0f} s wall (cache + training)"
    )
    return result.model.id, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="simclr-last2", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per L1 arm (+ view cache)")
    ap.add_argument("--home", default=str(Path.home() / ".cache" / "modelfab-bench" / "adapt"))
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny adaptation")
    args = ap.parse_args()
    torch.set_num_threads(2)
    home = Path(args.home)
    os.environ["MODELFAB_HOME"] = str(home)
    st = Store(Settings(home=home, db_url=f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts")))
    dv = import_elpv(st, "elpv").version
    rows = st.version_items(dv.id)
    register_foundation(st, "efficientnet-lite0", name="elpv-l0")
    arms: dict[str, Any] = {"L0": {"model": st.get_model("elpv-l0").id, "adapt_seconds": 0.0}}
    for name in [v for v in args.variants.split(",") if v]:
        model_id, seconds = run_variant(st, name, VARIANTS[name], args.budget, args.quick)
        arms[f"L1 {name}"] = {
            "model": model_id,
            "adapt_seconds": round(seconds, 1),
            "report": st.get_model(model_id).metrics,
        }
    for arm in arms.values():
        arm["val"] = evaluate(features(st, arm["model"], rows, home), rows, dv.tasks, with_test=False)
    l1_arms = [a for a in arms if a != "L0"]
    chosen = max(l1_arms, key=lambda a: arms[a]["val"]["elpv-defect"]["probe_all"]["val_auroc"], default=None)
    for arm in ["L0", *([chosen] if chosen else [])]:
        arms[arm]["test"] = evaluate(features(st, arms[arm]["model"], rows, home), rows, dv.tasks, with_test=True)
    table = Table(title="ELPV: L0 vs L1 (test AUROC; few-shot mean ± 95% CI over 5 seeds)")
    for col in ("arm", "task", "probe all", *[f"probe {k}/class" for k in SHOTS], "kNN anomaly", "val probe"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for arm, info in arms.items():
        for task in TASKS:
            val = f"{info['val'][task]['probe_all']['val_auroc']:.3f}"
            if "test" not in info:
                table.add_row(arm, task, "-", "-", "-", "-", "-", val)
                continue
            t = info["test"][task]
            few = [
                f"{t['fewshot'][str(k)]['test']['mean']:.3f}±{t['fewshot'][str(k)]['test']['ci95']:.3f}" for k in SHOTS
            ]
            table.add_row(arm, task, f"{t['probe_all']['test_auroc']:.3f}", *few, f"{t['knn']['test_auroc']:.3f}", val)
    console.print(table)
    result = {
        "benchmark": "adapt",
        "machine": describe_machine(),
        "dataset": f"elpv@{dv.version}",
        "split_hash": dv.split_info.get("hash"),
        "split_info": dv.split_info,
        "seeds": list(SEEDS),
        "shots": list(SHOTS),
        "budget_s": args.budget,
        "quick": args.quick,
        "chosen_l1": chosen,
        "variants": {k: VARIANTS[k] for k in args.variants.split(",") if k},
        "arms": arms,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, default=str))
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
