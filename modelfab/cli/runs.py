"""``modelfab runs ...``: list and show run records."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.store.runs import get_run, list_runs
from modelfab.store.schema import Run

app = typer.Typer(help="Runs: what every step did, with config, inputs, outputs and status.", no_args_is_help=True)


def run_dict(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "status": r.status,
        "config": r.config,
        "inputs": r.inputs,
        "outputs": r.outputs,
        "metrics": r.metrics,
        "error": r.error,
        "started_at": r.started_at.isoformat(),
        "ended_at": r.ended_at.isoformat() if r.ended_at else None,
    }


@app.command("list")
def list_(
    kind: str | None = typer.Option(None, help="Only runs of this kind."),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List runs, newest first."""
    runs = list_runs(store(), kind, limit)
    if as_json:
        print_json([run_dict(r) for r in runs])
        return
    table = Table(title="runs")
    for col in ("id", "kind", "status", "started", "seconds", "outputs"):
        table.add_column(col)
    for r in runs:
        secs = f"{(r.ended_at - r.started_at).total_seconds():.1f}" if r.ended_at else "-"
        style = {"failed": "red", "succeeded": "green"}.get(r.status, "yellow")
        table.add_row(
            r.id,
            r.kind,
            f"[{style}]{r.status}[/]",
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            secs,
            ", ".join(f"{k}={v}" for k, v in r.outputs.items()),
        )
    console.print(table)


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="Run id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one run."""
    info = run_dict(get_run(store(), run_id))
    if as_json:
        print_json(info)
        return
    table = Table(title=f"run {run_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key, str(value))
    console.print(table)
