"""``modelfab runs ...``: list and show run records."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from modelfab.cli import flow
from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.cli.flow import step_dict, steps_table
from modelfab.flow.state import driver_alive, steps_of
from modelfab.store.runs import get_run, list_runs
from modelfab.store.schema import Run

app = typer.Typer(help="Runs: what every step did, with config, inputs, outputs and status; pipeline runs can be "
                  "resumed, cancelled, approved.", no_args_is_help=True)


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
        status = r.status
        if r.kind == "pipeline" and r.status == "running" and not driver_alive(r):
            status = "running (driver gone: runs resume)"
        table.add_row(
            r.id,
            r.kind,
            f"[{style}]{status}[/]",
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            secs,
            f"pipeline {r.config.get('pipeline')}: {len(r.outputs)} steps with outputs" if r.kind == "pipeline"
            else ", ".join(f"{k}={v}" for k, v in r.outputs.items()),
        )
    console.print(table)


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="Run id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one run."""
    st = store()
    info = run_dict(get_run(st, run_id))
    steps = steps_of(st, run_id) if info["kind"] == "pipeline" else {}
    if as_json:
        if steps:
            info["steps"] = [step_dict(r) for r in steps.values()]
        print_json(info)
        return
    table = Table(title=f"run {run_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    if steps:  # the spec text and the per-step outputs are shown as the steps table below
        info["config"] = {k: v for k, v in info["config"].items() if k != "spec"}
        info.pop("outputs")
    for key, value in info.items():
        table.add_row(key, str(value))
    console.print(table)
    if steps:
        console.print(steps_table(f"steps of {run_id}", steps))


app.command("resume")(flow.resume)
app.command("cancel")(flow.cancel)
app.command("approve")(flow.approve)
app.command("logs")(flow.logs)
