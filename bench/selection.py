"""Export, INT8 and selection benchmark on ELPV (elpv-defect, official split).

For two L2s (probe on the full train split: logistic head on frozen EfficientNet-Lite0 at 224 px and
Lite2 at 260 px; a probe L2 is the whole network + head), their ONNX fp32 export and their static
INT8 (QDQ, per-channel, 64 calibration images) children: export/INT8 parity, test AUROC, p50/p95
latency at batch 1 and 32 (torch eager for the L2s, ONNX Runtime for the children), size; then
`select_model` under three budgets. The runtime gain (torch eager -> ONNX Runtime, same weights) is
reported apart from the model gains (Lite2 -> Lite0, fp32 -> INT8).

Resumable: every finished cell is saved to bench/results/select.json; registered models are found
again by name in the bench store (bench/.home/select). ``--refresh-children`` exports and quantizes the
L2s again (new versions of the same child names: the current exporter and INT8 recipe) and measures every
model again; the tuned L2s are kept.

    python bench/selection.py [--threads 1] [--refresh-children]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib module ``select``: drop its folder from the import path before
# anything imports ``select`` (socket, subprocess), and load bench/common.py by file path instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from modelfab.compress import export_model, extract, load_predictor, profile_model, select_model, stored_profiles  # noqa: E402
from modelfab.compress.data import labelled_split, run_batches, split_metrics  # noqa: E402
from modelfab.core.config import Settings  # noqa: E402
from modelfab.core.errors import NotFoundError  # noqa: E402
from modelfab.core.machine import device_label  # noqa: E402
from modelfab.data import import_elpv  # noqa: E402
from modelfab.store.store import Store  # noqa: E402
from modelfab.tune import TuneConfig, tune  # noqa: E402
from modelfab.zoo.registry import register_foundation  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_common", _HERE / "common.py")
assert _spec is not None and _spec.loader is not None
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
ResultFile = _common.ResultFile

TASK = "elpv-defect"
OUT = Path(__file__).parent / "results" / "select.json"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home" / "select"))
BASES = {"lite0": "efficientnet-lite0", "lite2": "efficientnet-lite2"}
# batch 1: (max p50 ms, max MB, runtime); user constraints to illustrate the choices, not tuned on test
BUDGETS = {"200ms": (200.0, None, "any"), "20ms": (20.0, None, "any"), "60ms-torch": (60.0, None, "torch"),
           "4ms-5MB": (4.0, 5.0, "any")}


def bench_store() -> Store:
    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    try:
        st.get_dataset_version("elpv")
    except NotFoundError:
        import_elpv(st, "elpv")
    for name, builder in BASES.items():
        register_foundation(st, builder, name=name)
    return st


def registered(st: Store, name: str) -> bool:
    try:
        st.get_model(name)
        return True
    except NotFoundError:
        return False


def build_models(st: Store, res: Any, seed: int) -> list[str]:  # res: bench_common.ResultFile
    """The L2s and their children (found by name when already registered and measured in ``res``)."""
    names = []
    for base in BASES:
        l2 = f"elpv-{base}"
        if not registered(st, l2):
            t0 = time.perf_counter()
            out = tune(st, base=base, data="elpv", name=l2, cfg=TuneConfig(labels=TASK, method="probe", seed=seed))
            res.put(f"tune/{base}", {"seconds": time.perf_counter() - t0, "val": out.val_metrics})
        if not registered(st, f"{l2}-onnx") or not res.done(f"export/{base}"):
            e = export_model(st, l2, "onnx")
            res.put(f"export/{base}", {"parity": e.parity, "bytes": e.artifact_bytes})
        if not registered(st, f"{l2}-int8") or not res.done(f"int8/{base}"):
            t0 = time.perf_counter()
            q = extract(st, f"{l2}-onnx", "quantize", {"samples": 64, "name": f"{l2}-int8"})
            res.put(f"int8/{base}", {"parity": q.parity, "bytes": q.artifact_bytes, **q.details,
                                     "seconds": time.perf_counter() - t0})
        names += [l2, f"{l2}-onnx", f"{l2}-int8"]
    return names


def test_cell(st: Store, name: str) -> dict[str, Any]:
    p = load_predictor(st, name)
    test = labelled_split(st, p, "elpv:test")
    m = split_metrics(p, test.y, run_batches(p, test.batches))
    mod = st.get_model(name)
    return {"id": mod.id, "test": m, "parity": (mod.metrics or {}).get("parity"), "runtime": p.runtime,
            "size_mb": p.size_bytes / 1e6, "format": p.format}


def profile_cell(st: Store, name: str, threads: int, repeats: int) -> dict[str, Any]:
    rows = profile_model(st, name, batches=[1, 32], threads=threads, repeats=repeats, warmup=2)
    return {str(r.batch): {"p50_ms": r.p50_ms, "p95_ms": r.p95_ms, "throughput": r.throughput,
                           "peak_memory_mb": r.peak_memory_mb, "size_mb": r.size_mb} for r in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every profile")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--refresh-children", action="store_true",
                    help="export and quantize again (new versions) and measure every model again")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # on 2 shared cores, 2 spinning threads are much slower than 1
    st = bench_store()
    dv = st.get_dataset_version("elpv")
    res = ResultFile(args.out, {"bench": "select", "task": TASK, "split_hash": dv.split_info.get("hash"),
                                "seeds": [args.seed], "threads": args.threads, "device": device_label(),
                                "l2": "probe (full train split), linear head on frozen Lite0@224 / Lite2@260"})
    console = Console()
    if args.refresh_children:
        for key in [k for k in res.data["cells"] if not k.startswith("tune/")]:
            del res.data["cells"][key]
    names = build_models(st, res, args.seed)
    for name in names:
        if not res.done(f"test/{name}"):
            res.put(f"test/{name}", test_cell(st, name))
        if not res.done(f"profile/{name}"):
            res.put(f"profile/{name}", profile_cell(st, name, args.threads, args.repeats))
    for budget, (ms, mb, runtime) in BUDGETS.items():
        if not res.done(f"select/{budget}"):
            sel = select_model(st, task="image-defect", data="elpv", max_latency_ms=ms, max_size_mb=mb, batch=1,
                               threads=args.threads, runtime=runtime, profile_missing=False)
            chosen = sel.chosen
            res.put(f"select/{budget}", {"max_latency_ms": ms, "max_size_mb": mb, "runtime": runtime,
                                         "chosen": chosen.model.name if chosen else None,
                                         "message": None if chosen else sel.nothing_fits(),
                                         "candidates": [{k: c.to_dict()[k] for k in ("name", "metric", "latency_ms",
                                                        "size_mb", "status", "reason")} for c in sel.candidates]})
    render(console, res.data["cells"], names, args.threads)
    if not stored_profiles(st, st.get_model(names[0]).id):
        raise SystemExit("profiles were not stored in the registry")
    return 0


def render(console: Console, cells: dict[str, Any], names: list[str], threads: int) -> None:
    table = Table(title=f"ELPV {TASK}: export / INT8 / latency ({device_label()}, {threads} thread(s))")
    for col in ("model", "runtime", "parity", "test AUROC", "p50 b1 ms", "p50 b32 ms", "size MB"):
        table.add_column(col)
    for name in names:
        t, p = cells[f"test/{name}"], cells[f"profile/{name}"]
        par = t["parity"]["status"] if t["parity"] else "-"
        table.add_row(name, t["runtime"], par, f"{t['test'].get('auroc', float('nan')):.4f}",
                      f"{p['1']['p50_ms']:.1f}", f"{p['32']['p50_ms']:.0f}", f"{t['size_mb']:.1f}")
    console.print(table)
    gains = Table(title="runtime gain (same weights) vs model gains, p50 ratio")
    for col in ("comparison", "batch 1", "batch 32"):
        gains.add_column(col)
    for base in BASES:
        l2 = f"elpv-{base}"
        for label, a, b in (("runtime: torch eager -> ORT fp32", l2, f"{l2}-onnx"),
                            ("model: ORT fp32 -> INT8", f"{l2}-onnx", f"{l2}-int8")):
            pa, pb = cells[f"profile/{a}"], cells[f"profile/{b}"]
            gains.add_row(f"{base} {label}", *(f"{pa[k]['p50_ms'] / pb[k]['p50_ms']:.2f}x" for k in ("1", "32")))
    pa, pb = cells["profile/elpv-lite2-onnx"], cells["profile/elpv-lite0-onnx"]
    ratios = (f"{pa[k]['p50_ms'] / pb[k]['p50_ms']:.2f}x" for k in ("1", "32"))
    gains.add_row("model: Lite2 -> Lite0 (ORT fp32)", *ratios)
    console.print(gains)
    sel = Table(title="selection (batch 1, val AUROC)")
    for col in ("budget", "chosen", "note"):
        sel.add_column(col)
    for budget in BUDGETS:
        c = cells[f"select/{budget}"]
        sel.add_row(budget, c["chosen"] or "-", c["message"] or "")
    console.print(sel)


if __name__ == "__main__":
    raise SystemExit(main())
