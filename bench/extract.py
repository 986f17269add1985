"""Compression benchmark on ELPV `elpv-defect`: AUROC vs latency for the teacher and its compressed children.

Arms (resumable: each finished arm is kept in bench/results/extract.json; each has a time budget):
  teacher      the Lite2 L2 (probe, all train labels) and its ONNX export
  lite0        an L2 on Lite0 trained on the same labels, ONNX
  distill-192  a Lite0 student distilled from the teacher (full fine-tuning, KD loss) at 192 px
  prune30/50/70  channel pruning of the teacher at 30/50/70% + KD fine-tuning
  elastic      ONE supernet training of the teacher, then sub-networks exported at latency budgets
               f x the teacher's ONNX p50 (cells elastic-<f>; a budget no sub-network meets is reported)
  <arm>-int8   the static INT8 child of each ONNX model (its parity verdict reported, deployable or not)
Every model is scored on the official test split (touched only here). When all arms are done, every
model is timed again in one final pass (ONNX Runtime, 2 threads, batch 1 and 32), so the latencies in
the table come from the same minutes of the same machine. Writes a table, a Pareto chart
(bench/results/extract.png) and the JSON with machine, split hash and seeds.

    .venv/bin/python bench/extract.py [--arms teacher,lite0,distill-192,prune30,...] [--budget-s 420]
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
ELASTIC = (0.6, 0.5, 0.4)  # budgets as fractions of the teacher's ONNX p50 at batch 1
ELASTIC_PX = 208  # the supernet is trained and served at this side (teacher: 260): depth/width alone save <= 13%
ALL = ["teacher", "lite0", "distill-192", "prune30", "prune50", "prune70", "elastic"]
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


def build(st: Store, arm: str, budget_s: float) -> str:
    """Make the arm's model (if missing) and return the name of the ONNX model to measure."""
    if arm == "teacher":
        return onnx_of(st, TEACHER)
    if arm == "lite0":
        return onnx_of(st, LITE0)
    name = f"bench-{arm}"
    if not have(st, name):
        if arm.startswith("distill"):
            size = int(arm.split("-")[1]) if "-" in arm else 224
            extract(st, TEACHER, "distill", {"student": "lite0", "epochs": 6, "max_seconds": budget_s, "name": name,
                                             "image_size": size})
        elif arm.startswith("prune"):
            extract(st, TEACHER, "prune", {"ratio": int(arm[5:]) / 100, "finetune_epochs": 3, "time_budget_s": budget_s,
                                           "max_train": 600, "name": name})
    return onnx_of(st, name)


def elastic_arms(st: Store, res: ResultFile, budget_s: float, threads: int, repeats: int) -> None:
    """Train the teacher's supernet once and export one sub-network per budget (cells ``elastic-<f>``)."""
    from modelfab.compress.elastic import ElasticConfig, export_subnet, train_supernet

    teacher_ms = res.data["cells"]["teacher"]["p50_ms"]["1"]
    todo = [f for f in ELASTIC if not res.done(f"elastic-{f:g}")]
    if not todo:
        return
    t0 = time.perf_counter()
    base: dict[str, Any] = {"time_budget_s": budget_s, "max_train": 600, "threads": threads, "resolution": ELASTIC_PX}
    # the smallest budget is the one the early latency check is made against: train with the largest, so that
    # an impossible small budget does not stop the others
    trained = train_supernet(st, st.get_model(TEACHER), ElasticConfig(max_latency_ms=max(todo) * teacher_ms, **base))
    train_s = time.perf_counter() - t0
    for frac in todo:
        key, name = f"elastic-{frac:g}", f"bench-elastic-{frac:g}"
        t1 = time.perf_counter()
        try:
            if not have(st, name):
                export_subnet(st, trained, ElasticConfig(max_latency_ms=frac * teacher_ms, name=name, **base))
            cell = measure(st, onnx_of(st, name), threads, repeats)
            res.put(key, {**cell, "budget_ms": frac * teacher_ms, "train_seconds": train_s,
                          "seconds": time.perf_counter() - t1})
        except ModelfabError as exc:
            res.put(key, {"error": str(exc).splitlines()[0], "budget_ms": frac * teacher_ms})
            console.print(f"[red]{key}: {exc}[/]")


def retime(st: Store, res: ResultFile, threads: int, repeats: int) -> None:
    """Time every measured model again, one after another, so the latencies share the machine's state."""
    for key, cell in res.data["cells"].items():
        if "model" not in cell:
            continue
        rows = profile_model(st, cell["model"], batches=[1, 32], threads=threads, repeats=repeats, warmup=2)
        res.put(key, {**cell, "p50_ms_at_build": cell.get("p50_ms_at_build", cell["p50_ms"]),
                      "p50_ms": {str(r.batch): r.p50_ms for r in rows}})


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
    ap.add_argument("--budget-s", type=float, default=420.0, help="training time budget of each arm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--retime", action=argparse.BooleanOptionalAction, default=True,
                    help="time every model again at the end, one after another")
    args = ap.parse_args()
    st = bench_store()
    split = st.get_dataset_version("elpv").split_info.get("hash")
    res = ResultFile(OUT, {"bench": "extract", "split": split, "seeds": [0], "threads": args.threads,
                           "teacher": TEACHER})
    arms = [a for a in args.arms.split(",") if a]
    if "teacher" not in arms and not res.done("teacher"):
        arms.insert(0, "teacher")
    for arm in arms:
        if arm == "elastic":
            try:
                elastic_arms(st, res, args.budget_s, args.threads, args.repeats)
            except ModelfabError as exc:
                res.put("elastic", {"error": str(exc).splitlines()[0]})
                console.print(f"[red]elastic: {exc}[/]")
            keys = [f"elastic-{f:g}" for f in ELASTIC]
        else:
            keys = [arm]
            if not res.done(arm):
                t0 = time.perf_counter()
                try:
                    name = build(st, arm, args.budget_s)
                    res.put(arm, {**measure(st, name, args.threads, args.repeats), "budget_s": args.budget_s,
                                  "seconds": time.perf_counter() - t0})
                except ModelfabError as exc:
                    res.put(arm, {"error": str(exc).splitlines()[0], "seconds": time.perf_counter() - t0})
                    console.print(f"[red]{arm}: {exc}[/]")
                    continue
        for key in keys:
            if args.int8 and not res.done(f"{key}-int8") and "model" in res.data["cells"].get(key, {}):
                source = res.data["cells"][key]["model"]
                child = f"{source}-int8"
                try:
                    if not have(st, child):
                        extract(st, source, "quantize", {"samples": 64, "name": child})
                    res.put(f"{key}-int8", measure(st, child, args.threads, args.repeats))
                except ModelfabError as exc:
                    res.put(f"{key}-int8", {"error": str(exc).splitlines()[0]})
    if args.retime:
        retime(st, res, args.threads, args.repeats)
    table(res.data["cells"])
    chart(res.data["cells"])
    console.print(f"results: {OUT}, chart: {PNG}")


if __name__ == "__main__":
    main()
