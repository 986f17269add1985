"""Compression benchmark on ELPV `elpv-defect`: AUROC vs latency for the teacher and its compressed children.

Arms (resumable: each finished arm is kept in bench/results/extract.json; each has a time budget):
  teacher      the Lite2 L2 (probe, all train labels) and its ONNX export
  lite0        an L2 on Lite0 trained on the same labels, ONNX
  distill      a Lite0 student distilled from the teacher (full fine-tuning, KD loss)
  prune30/50/70  channel pruning of the teacher at 30/50/70% + KD fine-tuning
  elastic-<f>  elastic sub-networks of the teacher at latency budgets f x the teacher's ONNX p50
  <arm>-int8   the static INT8 child of each ONNX model (its parity verdict reported, deployable or not)
Every model is timed in the same run with the same runtime as the teacher's ONNX export (ONNX Runtime,
2 threads, batch 1 and 32) and scored on the official test split (touched only here). Writes a table,
a Pareto chart (bench/results/extract.png) and the JSON with machine, split hash and seeds.

    .venv/bin/python bench/extract.py [--arms teacher,lite0,distill,prune30,...] [--budget-s 900]
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

sys.path.append(str(Path(__file__).parent))
from common import ResultFile

from modelfab.compress import export_model, extract, load_predictor, profile_model
from modelfab.compress.data import labelled_split, run_batches, split_metrics
from modelfab.core.config import Settings
from modelfab.core.errors import ModelfabError, NotFoundError
from modelfab.store.store import Store

HERE = Path(__file__).parent
OUT = HERE / "results" / "extract.json"
PNG = HERE / "results" / "extract.png"
SOURCE = Path(os.environ.get("MODELFAB_BENCH_HOME", HERE / ".home")) / "select"  # made by bench/selection.py
HOME = HERE / ".home-extract"
TEACHER, LITE0 = "elpv-lite2", "elpv-lite0"
ELASTIC = (0.6, 0.45, 0.3)  # budgets as fractions of the teacher's ONNX p50 at batch 1
ALL = ["teacher", "lite0", "distill", "prune30", "prune50", "prune70", *[f"elastic-{f:g}" for f in ELASTIC]]
console = Console()


def bench_store() -> Store:
    if not (HOME / "modelfab.db").exists():
        if not (SOURCE / "modelfab.db").exists():
            raise SystemExit(f"{SOURCE} has no store: run bench/selection.py first (it trains the L2s)")
        HOME.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOURCE / "modelfab.db", HOME / "modelfab.db")
    # the artifacts stay in the selection bench's content-addressed folder (new ones are added there)
    return Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}",
                          artifacts_url=str(SOURCE / "artifacts")))


def have(st: Store, name: str) -> bool:
    try:
        st.get_model(name)
        return True
    except NotFoundError:
        return False


def onnx_of(st: Store, name: str) -> str:
    """The ONNX fp32 model to time for ``name``: exported here (when ``name`` is a torch L2), so that every
    graph in the table comes from the same exporter (runtime Pad folding included)."""
    p = load_predictor(st, name)
    if p.format == "onnx":
        return name
    if not have(st, f"{name}-bench-onnx"):
        export_model(st, name, "onnx", name=f"{name}-bench-onnx")
    return f"{name}-bench-onnx"


def measure(st: Store, name: str, threads: int, repeats: int) -> dict[str, Any]:
    p = load_predictor(st, name)
    test = labelled_split(st, p, "elpv:test")
    m = split_metrics(p, test.y, run_batches(p, test.batches))
    rows = profile_model(st, name, batches=[1, 32], threads=threads, repeats=repeats, warmup=2)
    model = st.get_model(name)
    return {"model": name, "id": model.id, "params": model.params, "test": m, "val": (model.metrics or {}).get("val"),
            "parity": (model.metrics or {}).get("parity"), "size_mb": p.size_bytes / 1e6,
            "p50_ms": {str(r.batch): r.p50_ms for r in rows}}


def build(st: Store, arm: str, budget_s: float, teacher_ms: float | None) -> str:
    """Make the arm's model (if missing) and return the name of the ONNX model to measure."""
    if arm == "teacher":
        return onnx_of(st, TEACHER)
    if arm == "lite0":
        return onnx_of(st, LITE0)
    name = f"bench-{arm}"
    if not have(st, name):
        if arm == "distill":
            extract(st, TEACHER, "distill", {"student": "lite0", "epochs": 6, "max_seconds": budget_s, "name": name,
                                             "image_size": 224})
        elif arm.startswith("prune"):
            extract(st, TEACHER, "prune", {"ratio": int(arm[5:]) / 100, "finetune_epochs": 3, "time_budget_s": budget_s,
                                           "max_train": 600, "name": name})
        elif arm.startswith("elastic"):
            assert teacher_ms is not None
            frac = float(arm.split("-")[1])
            extract(st, TEACHER, "elastic", {"max_latency_ms": frac * teacher_ms, "time_budget_s": budget_s,
                                             "max_train": 600, "name": name})
    return onnx_of(st, name)


def chart(cells: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, c in sorted(cells.items()):
        if "test" not in c or "auroc" not in c["test"]:
            continue
        int8 = key.endswith("-int8")
        ax.scatter(c["p50_ms"]["1"], c["test"]["auroc"], marker="x" if int8 else "o",
                   color="gray" if int8 else "C0")
        ax.annotate(key, (c["p50_ms"]["1"], c["test"]["auroc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("ONNX Runtime p50 latency, batch 1 (ms)")
    ax.set_ylabel("test AUROC (elpv-defect)")
    ax.set_title("compression on ELPV: AUROC vs latency (x: INT8 children)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PNG, dpi=120)


def table(cells: dict[str, Any]) -> None:
    teacher = cells.get("teacher")
    t = Table(title="compression on ELPV elpv-defect (test split; ONNX Runtime, same run)")
    for col in ("arm", "test AUROC", "Δ vs teacher", "p50 b1 ms", "x teacher", "p50 b32 ms", "params", "MB", "parity"):
        t.add_column(col, justify="right" if col != "arm" else "left")
    for key, c in cells.items():
        if "test" not in c:
            t.add_row(key, "-", "-", "-", "-", "-", "-", "-", c.get("error", "not run")[:60])
            continue
        auc = c["test"].get("auroc", float("nan"))
        d = auc - teacher["test"]["auroc"] if teacher else float("nan")
        ratio = c["p50_ms"]["1"] / teacher["p50_ms"]["1"] if teacher else float("nan")
        parity = (c.get("parity") or {}).get("status", "-")
        t.add_row(key, f"{auc:.4f}", f"{d:+.4f}", f"{c['p50_ms']['1']:.1f}", f"{ratio:.2f}",
                  f"{c['p50_ms'].get('32', float('nan')):.0f}", f"{c['params']:,}", f"{c['size_mb']:.1f}", parity)
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", default=",".join(ALL))
    ap.add_argument("--budget-s", type=float, default=900.0, help="training time budget of each arm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    st = bench_store()
    split = st.get_dataset_version("elpv").split_info.get("hash")
    res = ResultFile(OUT, {"bench": "extract", "split": split, "seeds": [0], "threads": args.threads,
                           "teacher": TEACHER, "budget_s": args.budget_s})
    arms = [a for a in args.arms.split(",") if a]
    if "teacher" not in arms and not res.done("teacher"):
        arms.insert(0, "teacher")
    for arm in arms:
        if not res.done(arm):
            t0 = time.perf_counter()
            try:
                teacher_ms = res.data["cells"].get("teacher", {}).get("p50_ms", {}).get("1")
                name = build(st, arm, args.budget_s, teacher_ms)
                res.put(arm, {**measure(st, name, args.threads, args.repeats), "seconds": time.perf_counter() - t0})
            except ModelfabError as exc:
                res.put(arm, {"error": str(exc).splitlines()[0], "seconds": time.perf_counter() - t0})
                console.print(f"[red]{arm}: {exc}[/]")
                continue
        if args.int8 and f"{arm}-int8" not in res.data["cells"] and "model" in res.data["cells"][arm]:
            source = res.data["cells"][arm]["model"]
            child = f"{source}-int8"
            try:
                if not have(st, child):
                    extract(st, source, "quantize", {"samples": 64, "name": child})
                res.put(f"{arm}-int8", measure(st, child, args.threads, args.repeats))
            except ModelfabError as exc:
                res.put(f"{arm}-int8", {"error": str(exc).splitlines()[0]})
    table(res.data["cells"])
    chart(res.data["cells"])
    console.print(f"results: {OUT}, chart: {PNG}")


if __name__ == "__main__":
    main()
