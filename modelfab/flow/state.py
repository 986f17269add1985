"""Pipeline run records: a ``runs`` row (kind ``pipeline``) plus one ``pipeline_steps`` row per step."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import select

from modelfab.core.errors import ConflictError, NotFoundError
from modelfab.store.schema import PipelineStep, Run, utcnow
from modelfab.store.store import Store

DONE = ("succeeded", "cached")
BLOCKED = ("failed", "waiting", "cancelled", "skipped")


def steps_of(store: Store, run_id: str) -> dict[str, PipelineStep]:
    with store.session() as s:
        rows = s.scalars(select(PipelineStep).where(PipelineStep.run_id == run_id).order_by(PipelineStep.id)).all()
    return {r.name: r for r in rows}


def pipeline_run(store: Store, run_id: str) -> Run:
    with store.session() as s:
        run = s.get(Run, run_id)
    if run is None or run.kind != "pipeline":
        raise NotFoundError(f"unknown pipeline run {run_id!r} (see modelfab runs list --kind pipeline)")
    return run


def update_step(store: Store, run_id: str, name: str, **fields: Any) -> PipelineStep:
    """Set fields of one step row; ``meta`` is merged, not replaced."""
    with store.transaction() as s:
        row = s.scalar(select(PipelineStep).where(PipelineStep.run_id == run_id, PipelineStep.name == name))
        if row is None:
            raise NotFoundError(f"run {run_id} has no step {name!r}")
        meta = fields.pop("meta", None)
        for key, value in fields.items():
            setattr(row, key, value)
        if meta:
            row.meta = {**(row.meta or {}), **meta}
    return row


def update_run(store: Store, run_id: str, **fields: Any) -> None:
    with store.transaction() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"unknown run {run_id!r}")
        config = fields.pop("config", None)
        for key, value in fields.items():
            setattr(run, key, value)
        if config:
            run.config = {**(run.config or {}), **config}


def driver_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def driver_alive(run: Run) -> bool:
    """Whether the process that drives ``run`` still lives (only knowable on the same host)."""
    drv = (run.config or {}).get("driver") or {}
    pid = drv.get("pid")
    if not isinstance(pid, int) or drv.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def claim(store: Store, run_id: str) -> Run:
    """Take over a run for this process; refuses while its driver still lives."""
    run = pipeline_run(store, run_id)
    if run.status == "running" and driver_alive(run):
        pid = run.config["driver"]["pid"]
        raise ConflictError(f"run {run_id} is still being driven by pid {pid}; wait, or modelfab runs cancel {run_id}")
    update_run(store, run_id, status="running", ended_at=None, error=None, config={"driver": driver_info()})
    return pipeline_run(store, run_id)


def reset_for_resume(store: Store, run_id: str) -> list[str]:
    """Steps that did not finish go back to ``pending`` (their meta, with attempts and approvals, stays)."""
    reset = []
    for name, row in steps_of(store, run_id).items():
        if row.status not in DONE and row.status != "pending":
            update_step(store, run_id, name, status="pending", error=None, ended_at=None)
            reset.append(name)
    return reset


def now() -> Any:
    return utcnow()
