"""``modelfab profile``, ``modelfab export`` and ``modelfab extract``."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.core.errors import ConfigError


def _batches(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"batch: expected comma-separated integers such as 1,8,32, got {text!r}") from None


def profile(
    model: str = typer.Argument(..., help="Model id, NAME, NAME:version or NAME@alias."),
    runtime: str | None = typer.Option(None, help="torch or onnxruntime (default: the one its format needs)."),
    batch: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    threads: int | None = typer.Option(None, help="Intra-op threads (default: torch's setting)."),
    repeats: int = typer.Option(20, help="Timed calls per batch size (after the warm-up)."),
    warmup: int = typer.Option(3, help="Untimed warm-up calls per batch size."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Measure latency (p50/p95), throughput, peak memory and size; store them in the registry."""
    from modelfab.compress.profile import profile_dict, profile_model

    st = store()
    rows = profile_model(st, model, runtime=runtime, batches=_batches(batch), threads=threads, repeats=repeats,
                         warmup=warmup)
    out = [profile_dict(r) for r in rows]
    if as_json:
        print_json(out)
        return
    m = st.get_model(model)
    first = out[0]
    table = Table(title=f"{m.name}:{m.version} on {first['device']} ({first['runtime']}, {first['threads']} threads)")
    for col in ("batch", "p50 ms", "p95 ms", "items/s", "peak MB", "size MB"):
        table.add_column(col, justify="right")
    for r in out:
        table.add_row(str(r["batch"]), f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['throughput']:.1f}",
                      f"{r['peak_memory_mb']:.0f}", f"{r['size_mb']:.2f}")
    console.print(table)


def _parity_table(title: str, parity: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in parity.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    return table


def _finish(model: Any, parity: dict[str, Any], size: int, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    info = {"id": model.id, "name": model.name, "version": model.version, "parent_id": model.parent_id,
            "artifact_bytes": size, "parity": parity, "val": (model.metrics or {}).get("val"), **(extra or {})}
    if as_json:
        print_json(info)
    else:
        console.print(_parity_table(f"{model.name}:{model.version} ({model.id}), {size / 1e6:.2f} MB", parity))
    if parity["status"] != "passed":
        from modelfab.compress.parity import ParityFailed

        ref = f"{model.name}:{model.version}"
        raise ParityFailed(f"parity failed: {parity['reason']} ({ref} registered, not deployable)")


def export(
    model: str = typer.Argument(..., help="The L2 to export: id, NAME, NAME:version or NAME@alias."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    data: str | None = typer.Option(None, help="DATASET@version[:split] for parity (default: its dataset, val)."),
    name: str | None = typer.Option(None, help="Name of the child (default: MODEL-FORMAT)."),
    tolerance: float = typer.Option(1e-4, help="Largest allowed |Δ probability| torch vs exported runtime."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Export an L2 (ONNX or TorchScript), check fp32 parity and register it as a child model.

    Exit code 1 when parity fails (the child is registered with the failed record, not deployable).
    """
    from modelfab.compress.export import export_model

    res = export_model(store(), model, fmt, data=data, tolerance=tolerance, name=name)
    _finish(res.model, res.parity, res.artifact_bytes, as_json)


def extract(
    model: str = typer.Argument(..., help="Source model: id, NAME, NAME:version or NAME@alias."),
    method: str = typer.Option(..., help="Extractor: quantize (static INT8), distill, prune, elastic."),
    calibration: str | None = typer.Option(None, help="quantize: DATASET@version[:split] of calibration images."),
    samples: int | None = typer.Option(None, help="quantize: calibration images (default 64)."),
    data: str | None = typer.Option(None, help="DATASET@version[:split] for the parity (default: its dataset, val)."),
    name: str | None = typer.Option(None, help="Name of the child (default: MODEL-<method>)."),
    student: str | None = typer.Option(None, help="distill: the student base (a registered L0/L1)."),
    ratio: float | None = typer.Option(None, help="prune: fraction of channels removed, in (0, 0.95)."),
    max_latency_ms: float | None = typer.Option(None, help="elastic: latency budget of the extracted sub-network."),
    epochs: int | None = typer.Option(None, help="distill / prune / elastic: training epochs."),
    option: list[str] = typer.Option([], "--option", "-o", help="Any other option of the method: KEY=VALUE."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Derive a child model (INT8, distilled, pruned, elastic sub-network) with its parity record.

    Exit code 1 when parity fails (the child is registered with the failed record, not deployable).
    """
    from modelfab.compress.extract import extract as run_extract
    from modelfab.flow.spec import parse_set

    flags = {"calibration": calibration, "samples": samples, "data": data, "name": name, "student": student,
             "ratio": ratio, "max_latency_ms": max_latency_ms, "epochs": epochs}
    options = {k: v for k, v in flags.items() if v is not None}
    for key, value in parse_set(option).items():
        options[key.replace("-", "_")] = value
    res = run_extract(store(), model, method, options)
    _finish(res.model, res.parity, res.artifact_bytes, as_json, {"details": res.details})
