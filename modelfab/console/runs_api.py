"""Console routes for runs: the list, a pipeline run's step graph, live step states (server-sent events),
step logs, approve/reject at an ``approve`` gate (who and when recorded), resume and cancel."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from modelfab.console.context import Caller, ConsoleContext, Ctx, require, who
from modelfab.core.errors import ConflictError
from modelfab.store.runs import get_run, list_runs
from modelfab.store.schema import PipelineStep, Run
from modelfab.store.store import Store

router = APIRouter()
POLL_S = 0.5
STREAM_MAX_S = 3600.0
LOG_TAIL = 200_000  # characters of each step log sent to the browser
FINAL = ("succeeded", "failed", "cancelled")


def _seconds(start: Any, end: Any) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _status(run: Run) -> str:
    from modelfab.flow.state import driver_alive

    if run.kind == "pipeline" and run.status == "running" and not driver_alive(run):
        return "running (driver gone)"
    return run.status


@router.get("/runs")
def runs(ctx: Ctx, _: Caller, kind: str | None = None, limit: int = 100) -> dict[str, Any]:
    """Runs, newest first (``kind=pipeline`` for pipeline runs only)."""
    rows = list_runs(ctx.store, kind or None, max(1, min(limit, 500)))
    return {"runs": [{"id": r.id, "kind": r.kind, "status": _status(r), "pipeline": (r.config or {}).get("pipeline"),
                      "started_at": r.started_at.isoformat(), "seconds": _seconds(r.started_at, r.ended_at),
                      "error": r.error} for r in rows]}


def _step(row: PipelineStep, needs: list[str]) -> dict[str, Any]:
    meta = row.meta or {}
    return {"name": row.name, "uses": row.uses, "status": row.status, "needs": needs, "error": row.error,
            "seconds": _seconds(row.started_at, row.ended_at), "outputs": row.outputs,
            "approval": meta.get("approval"), "attempts": meta.get("attempts"),
            "started_at": row.started_at.isoformat() if row.started_at else None}


def _needs(store: Store, run_id: str) -> dict[str, list[str]]:
    from modelfab.flow.engine import plan_of_run

    try:
        return {k: list(v) for k, v in plan_of_run(store, run_id).deps.items()}
    except Exception:  # a spec that no longer validates still shows its steps, without edges
        return {}


def snapshot(store: Store, run_id: str, needs: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The run's status and every step's state (what the events stream sends when it changes)."""
    from modelfab.flow.state import steps_of

    run = get_run(store, run_id)
    needs = needs if needs is not None else (_needs(store, run_id) if run.kind == "pipeline" else {})
    steps = steps_of(store, run_id) if run.kind == "pipeline" else {}
    return {"id": run.id, "status": _status(run), "error": run.error, "ended_at": run.ended_at.isoformat()
            if run.ended_at else None, "steps": [_step(r, needs.get(n, [])) for n, r in steps.items()]}


@router.get("/runs/{run_id}")
def run_detail(run_id: str, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """A run: kind, config (pipeline spec text), inputs, outputs, metrics, and its steps with their needs."""
    st = ctx.store
    run = get_run(st, run_id)
    config = dict(run.config or {})
    spec = config.pop("spec", None)
    return {**snapshot(st, run_id), "kind": run.kind, "pipeline": config.get("pipeline"), "spec": spec,
            "config": config, "inputs": run.inputs, "outputs": run.outputs, "metrics": run.metrics,
            "started_at": run.started_at.isoformat()}


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, request: Request, ctx: Ctx, _: Caller) -> StreamingResponse:
    """Server-sent events: a ``state`` event with :func:`snapshot` whenever a step or the run changes
    (the store is polled every 0.5 s), and a comment line every 15 s to keep the connection open."""
    st = ctx.store
    needs = await run_in_threadpool(lambda: _needs(st, run_id) if get_run(st, run_id).kind == "pipeline" else {})

    async def stream() -> AsyncIterator[str]:
        last, idle = "", 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < STREAM_MAX_S and not await request.is_disconnected():
            state = json.dumps(await run_in_threadpool(snapshot, st, run_id, needs), default=str)
            if state != last:
                last, idle = state, 0.0
                yield f"event: state\ndata: {state}\n\n"
            elif idle >= 15.0:
                idle = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)
            idle += POLL_S

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/runs/{run_id}/logs")
def run_logs(run_id: str, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """Each step's log (the tail), plus the log of drivers the console started."""
    from modelfab.flow.engine import work_dir
    from modelfab.flow.state import pipeline_run, steps_of

    st = ctx.store
    pipeline_run(st, run_id)
    logs: dict[str, str] = {}
    for name in [*steps_of(st, run_id), "console-resume"]:
        path = work_dir(st, run_id, name) / "log.txt"
        if path.is_file():
            logs[name] = path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]
        elif name != "console-resume":
            logs[name] = ""
    return {"run": run_id, "logs": logs}


def start_resume(ctx: ConsoleContext, run_id: str) -> int:
    """Continue a pipeline run in a new ``modelfab runs resume`` process (it outlives the request);
    its output goes to the run's ``console-resume`` log. Returns the pid."""
    from modelfab.flow.state import driver_alive, pipeline_run

    st = ctx.store
    run = pipeline_run(st, run_id)
    ctx.reap()
    if run.status == "succeeded":
        raise ConflictError(f"run {run_id} already succeeded; nothing to resume")
    if (run.status == "running" and driver_alive(run)) or run_id in ctx.children:
        raise ConflictError(f"run {run_id} is being driven right now; wait for it")
    return _spawn_driver(ctx, run_id)


def _spawn_driver(ctx: ConsoleContext, run_id: str) -> int:
    """Drive ``run_id`` in a new ``modelfab runs resume`` process; output to its ``console-resume`` log."""
    from modelfab.flow.engine import work_dir

    st = ctx.store
    log = work_dir(st, run_id, "console-resume") / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODELFAB_HOME": str(st.settings.home), "MODELFAB_DB": st.settings.db_url,
           "MODELFAB_ARTIFACTS": st.settings.artifacts_url}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modelfab.cli.main", "runs", "resume", run_id],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    ctx.children[run_id] = proc
    return proc.pid


class ApproveBody(BaseModel):
    step: str | None = Field(None, max_length=100)
    approved: bool = True
    comment: str = Field("", max_length=1000)
    resume: bool = True


@router.post("/runs/{run_id}/approve")
def approve(run_id: str, body: ApproveBody, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Record an approval or rejection on a waiting approve step (engineer or above), then resume the run."""
    from modelfab.flow.engine import approve_step

    require(principal, "engineer", "approve pipeline steps")
    st = ctx.store
    step = approve_step(st, run_id, body.step, by=who(principal), approved=body.approved, comment=body.comment)
    pid = start_resume(ctx, run_id) if body.resume else None
    return {"run": run_id, "step": step, "approved": body.approved, "by": who(principal), "resumed_pid": pid}


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Continue a waiting, failed, cancelled or crashed pipeline run (engineer or above)."""
    require(principal, "engineer", "resume pipeline runs")
    return {"run": run_id, "resumed_pid": start_resume(ctx, run_id)}


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Cancel a pipeline run: no further step starts (engineer or above)."""
    from modelfab.flow.engine import cancel_run

    require(principal, "engineer", "cancel pipeline runs")
    return {"run": run_id, "signalled": cancel_run(ctx.store, run_id)}


@router.post("/runs/{run_id}/rerun")
def rerun(run_id: str, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Start a new run of the same pipeline (its stored spec and overrides; unchanged steps come from the
    cache) in a new process (engineer or above). Returns the new run's id."""
    from modelfab.flow.engine import create_run, plan_of_run
    from modelfab.flow.state import pipeline_run, update_run

    require(principal, "engineer", "re-run pipelines")
    st = ctx.store
    old = pipeline_run(st, run_id)
    plan = plan_of_run(st, run_id)
    new_id = create_run(st, plan, executor=old.config.get("executor", "local"),
                        overrides=old.config.get("overrides") or None)
    update_run(st, new_id, config={"driver": None})  # not driven by this server: the new process claims it
    return {"run": new_id, "rerun_of": run_id, "driver_pid": _spawn_driver(ctx, new_id)}

