"""``modelfab run PIPELINE.yaml`` and the pipeline commands of ``modelfab runs``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.core.errors import ModelfabError
from modelfab.store.schema import PipelineStep

STYLE = {"succeeded": "green", "cached": "cyan", "failed": "red", "waiting": "yellow", "running": "yellow",
         "skipped": "dim", "cancelled": "dim", "pending": "dim"}
MARK = {"succeeded": "✓", "cached": "↺", "failed": "✗", "waiting": "⏸", "skipped": "-", "cancelled": "-"}


class PipelineFailed(ModelfabError):
    """The pipeline ran and a step failed (exit code 1)."""

    exit_code = 1


def seconds(row: PipelineStep) -> float | None:
    return (row.ended_at - row.started_at).total_seconds() if row.started_at and row.ended_at else None


def step_dict(row: PipelineStep) -> dict[str, Any]:
    return {"name": row.name, "uses": row.uses, "status": row.status, "outputs": row.outputs, "error": row.error,
            "seconds": seconds(row), "cache_key": row.cache_key, "meta": row.meta}


def steps_table(title: str, rows: dict[str, PipelineStep]) -> Table:
    table = Table(title=title)
    for col in ("step", "uses", "status", "seconds", "outputs / reason"):
        table.add_column(col, overflow="fold")
    for row in rows.values():
        secs = seconds(row)
        detail = ", ".join(f"{k}={v}" for k, v in row.outputs.items() if not isinstance(v, dict))
        if row.status in ("failed", "waiting", "skipped") and row.error:
            detail = row.error
        if row.status == "cached":
            src = (row.meta or {}).get("cached_from", {})
            detail = f"{detail} (cached from {src.get('run')})"
        style = STYLE.get(row.status, "")
        table.add_row(row.name, row.uses, f"[{style}]{row.status}[/]", f"{secs:.1f}" if secs is not None else "-",
                      detail)
    return table


def on_event(kind: str, row: PipelineStep) -> None:
    if kind == "start":
        console.print(f"[bold]▶ {row.name}[/] ({row.uses})")
        return
    secs = seconds(row)
    extra = f" in {secs:.1f} s" if secs is not None else ""
    reason = f": {row.error}" if row.status in ("failed", "waiting") and row.error else ""
    console.print(f"[{STYLE.get(row.status, '')}]{MARK.get(row.status, '?')} {row.name} {row.status}{extra}[/]{reason}")


def echo(line: str) -> None:
    console.print(f"  [dim]{line}[/]", highlight=False)


def report(summary: Any, as_json: bool) -> None:
    """Print the summary (table or JSON) and turn the outcome into the exit code."""
    if as_json:
        print_json({"run": summary.run_id, "status": summary.status, "message": summary.message,
                    "steps": [step_dict(r) for r in summary.steps.values()]})
    else:
        console.print(steps_table(f"run {summary.run_id}: {summary.status}", summary.steps))
    if summary.status == "failed":
        raise PipelineFailed(f"run {summary.run_id}: {summary.message}")
    if summary.status == "waiting":
        print(f"waiting: {' '.join(summary.message.split())}", file=sys.stderr, flush=True)
        raise typer.Exit(3)
    if summary.status == "cancelled":
        raise PipelineFailed(f"run {summary.run_id} was cancelled")


def run(
    pipeline: Path = typer.Argument(..., help="The pipeline YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override: KEY=VALUE (params.KEY) or steps.S.with.P=VALUE."),
    executor: str = typer.Option("local", help="local (this process) or ray."),
    address: str | None = typer.Option(None, help="--executor ray: a cluster address (e.g. auto, 127.0.0.1:6379)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step even when a cached result exists."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the plan; run nothing."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run a pipeline: steps in dependency order, cached by input hash, resumable (exit 3: waiting for a person)."""
    from modelfab.flow import load_spec, run_pipeline, validate
    from modelfab.flow.executors import EXECUTORS
    from modelfab.flow.spec import parse_set

    overrides = parse_set(set_)
    loaded = load_spec(pipeline, overrides)
    EXECUTORS.entry(executor)
    st = store()
    plan = validate(loaded, st)
    if dry_run:
        if as_json:
            print_json({"pipeline": plan.name, "order": plan.order, "needs": plan.deps, "with": plan.with_})
            return
        table = Table(title=f"pipeline {plan.name}: {len(plan.order)} steps (dry run)")
        for col in ("step", "uses", "needs", "with"):
            table.add_column(col, overflow="fold")
        for n in plan.order:
            table.add_row(n, loaded.spec.steps[n].uses, ", ".join(plan.deps[n]),
                          ", ".join(f"{k}={v}" for k, v in plan.with_[n].items()))
        console.print(table)
        return
    summary = run_pipeline(
        st, plan, executor=executor, address=address, no_cache=no_cache, overrides=overrides,
        on_event=None if as_json else on_event, echo=None if as_json else echo,
        on_created=None if as_json else lambda rid: console.print(f"run [bold]{rid}[/] ({plan.name}, {executor})"),
    )
    report(summary, as_json)


def resume(
    run_id: str = typer.Argument(..., help="A pipeline run id."),
    executor: str | None = typer.Option(None, help="Override the run's executor (local or ray)."),
    address: str | None = typer.Option(None, help="--executor ray: a cluster address."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Continue a crashed, failed, waiting or cancelled pipeline run; finished steps are not repeated."""
    from modelfab.flow import resume_run

    summary = resume_run(store(), run_id, executor=executor, address=address,
                         on_event=None if as_json else on_event, echo=None if as_json else echo)
    report(summary, as_json)


def cancel(run_id: str = typer.Argument(..., help="A pipeline run id.")) -> None:
    """Cancel a pipeline run: no further step starts (its driver on this machine is signalled)."""
    from modelfab.flow import cancel_run

    signalled = cancel_run(store(), run_id)
    console.print(f"run {run_id} cancelled" + (" (driver signalled)" if signalled else ""))


def approve(
    run_id: str = typer.Argument(..., help="A pipeline run id."),
    step: str | None = typer.Option(None, help="The approve step (default: the only open one)."),
    by: str = typer.Option(..., help="Who approves (recorded with the time)."),
    reject: bool = typer.Option(False, "--reject", help="Reject instead: the step fails."),
    comment: str = typer.Option("", help="A note kept with the decision."),
    go_on: bool = typer.Option(True, "--resume/--no-resume", help="Continue the run right away."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Record a manual approval (or rejection) on a waiting approve step, then continue the run."""
    from modelfab.flow import approve_step, resume_run

    st = store()
    name = approve_step(st, run_id, step, by=by, approved=not reject, comment=comment)
    if not as_json:
        console.print(f"{'rejected' if reject else 'approved'} {run_id}/{name} by {by}")
    if go_on:
        summary = resume_run(st, run_id, on_event=None if as_json else on_event, echo=None if as_json else echo)
        report(summary, as_json)


def logs(
    run_id: str = typer.Argument(..., help="A pipeline run id."),
    step: str | None = typer.Option(None, help="Only this step."),
) -> None:
    """Print the step logs of a pipeline run."""
    from modelfab.flow.engine import work_dir
    from modelfab.flow.state import pipeline_run, steps_of

    st = store()
    pipeline_run(st, run_id)
    rows = steps_of(st, run_id)
    if step is not None and step not in rows:
        raise ModelfabError(f"--step: run {run_id} has no step {step!r} (steps: {', '.join(rows)})")
    for name in [step] if step else list(rows):
        path = work_dir(st, run_id, name) / "log.txt"
        console.rule(f"{name} ({rows[name].status})")
        console.print(path.read_text(encoding="utf-8") if path.exists() else "(no log)", highlight=False, markup=False)
