"""Run records: every step (import, tune, screen, ...) logs its config, inputs, outputs, status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from modelfab.core.errors import NotFoundError
from modelfab.store.schema import Run, utcnow

if TYPE_CHECKING:
    from modelfab.store.store import Store


def start_run(
    store: Store, kind: str, config: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None
) -> Run:
    from modelfab.store.store import new_id

    run = Run(id=new_id("r"), kind=kind, status="running", config=config or {}, inputs=inputs or {})
    with store.transaction() as s:
        s.add(run)
    return run


@contextmanager
def tracked_run(
    store: Store, kind: str, config: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None
) -> Iterator[Run]:
    """Start a run; if the body raises, mark it failed with the error (the caller finishes it on success)."""
    run = start_run(store, kind, config, inputs)
    try:
        yield run
    except BaseException as exc:
        finish_run(store, run.id, status="failed", error=str(exc) or type(exc).__name__)
        raise


def finish_run(
    store: Store,
    run_id: str,
    *,
    status: str = "succeeded",
    outputs: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
    logs: str = "",
) -> Run:
    with store.transaction() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"unknown run {run_id!r}")
        run.status = status
        run.outputs = outputs or {}
        run.metrics = metrics or {}
        run.error = error
        run.logs = (run.logs or "") + logs
        run.ended_at = utcnow()
    return run


def get_run(store: Store, run_id: str) -> Run:
    with store.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"unknown run {run_id!r}")
        return run


def list_runs(store: Store, kind: str | None = None, limit: int = 100) -> list[Run]:
    with store.session() as s:
        q = select(Run).order_by(Run.started_at.desc()).limit(limit)
        if kind:
            q = q.where(Run.kind == kind)
        return list(s.scalars(q).all())
