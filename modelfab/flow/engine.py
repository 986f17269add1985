"""Run pipelines: create the run record, execute steps (cached, resumable), drive the graph.

``execute_step`` is what every executor calls, in-process (``local``) or in a worker (``ray``):
it resolves the step's references from the finished steps' outputs, looks up the cache, runs
the step and records the outcome. A step record says ``running`` while it runs; after a crash the
driver is dead and ``runs resume`` puts it back to ``pending``, with ``resume`` set so that it
continues from its own checkpoint.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelfab.core.errors import ConfigError, ConflictError, ModelfabError
from modelfab.flow.cache import cache_key, find_cached
from modelfab.flow.graph import downstream
from modelfab.flow.refs import Ref, dig, resolve
from modelfab.flow.spec import LoadedSpec, load_spec_text
from modelfab.flow.state import (
    DONE,
    claim,
    driver_info,
    now,
    pipeline_run,
    reset_for_resume,
    steps_of,
    update_run,
    update_step,
)
from modelfab.flow.steps import STEPS, StepContext, StepWaiting
from modelfab.flow.validate import PipelinePlan, validate
from modelfab.store.runs import start_run
from modelfab.store.schema import PipelineStep
from modelfab.store.store import Store

Event = Callable[[str, PipelineStep], None]


def work_dir(store: Store, run_id: str, step: str) -> Path:
    return store.settings.home / "runs" / "pipelines" / run_id / step


def create_run(store: Store, plan: PipelinePlan, *, executor: str = "local", no_cache: bool = False,
               overrides: dict[str, Any] | None = None) -> str:
    """Record a new pipeline run with every step ``pending``; returns the run id."""
    spec = plan.loaded.spec
    config = {
        "pipeline": spec.name,
        "source": plan.loaded.source,
        "spec": plan.loaded.text,
        "overrides": overrides or {},
        "executor": executor,
        "no_cache": no_cache,
        "driver": driver_info(),
    }
    run = start_run(store, "pipeline", config=config, inputs={"params": plan.params})
    with store.transaction() as s:
        for name in plan.order:
            s.add(PipelineStep(run_id=run.id, name=name, uses=spec.steps[name].uses, status="pending",
                               params={}, outputs={}, meta={}))
    return run.id


def plan_of_run(store: Store, run_id: str) -> PipelinePlan:
    """The plan a run was created with (from the spec text stored on the run)."""
    run = pipeline_run(store, run_id)
    loaded: LoadedSpec = load_spec_text(run.config["spec"], run.config.get("source", run_id),
                                        run.config.get("overrides") or None)
    return validate(loaded)


class _Logger:
    def __init__(self, path: Path, echo: Callable[[str], None] | None) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"{now().isoformat(timespec='seconds')} {line}\n")
        if self.echo is not None:
            self.echo(line)


def _resolve_with(plan: PipelinePlan, name: str, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    where = plan.loaded.where(("steps", name, "with"))

    def lookup(ref: Ref) -> Any:
        if ref.kind != "step":
            raise ConfigError(f"{where}: unresolved {ref.text}")
        if ref.name not in outputs:
            raise ConfigError(f"{where}: step {ref.name!r} has not produced outputs yet")
        value = outputs[ref.name].get(ref.output)
        if value is None:
            raise ConfigError(f"{where}: step {ref.name!r} recorded no output {ref.output!r}")
        return dig(value, ref.path, where)

    return dict(resolve(plan.with_[name], lookup))


def execute_step(store: Store, run_id: str, name: str, *, no_cache: bool = False,
                 echo: Callable[[str], None] | None = None) -> str:
    """Run (or take from the cache) one step of a run; returns its final status."""
    plan = plan_of_run(store, run_id)
    rows = steps_of(store, run_id)
    row = rows[name]
    spec = plan.loaded.spec.steps[name]
    cls = STEPS.get(spec.uses)
    outputs = {n: r.outputs for n, r in rows.items() if r.status in DONE}
    wdir = work_dir(store, run_id, name)
    attempts = int((row.meta or {}).get("attempts", 0))
    ctx = StepContext(store=store, run_id=run_id, step=name, work_dir=wdir, resume=attempts > 0,
                      meta=dict(row.meta or {}), log=_Logger(wdir / "log.txt", echo))
    try:
        raw = _resolve_with(plan, name, outputs)
        try:
            params = cls.Params.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(str(p) for p in err["loc"])
            raise ConfigError(f"{plan.loaded.where(('steps', name, 'with', *loc))}: {err['msg']}") from None
        key = cache_key(store, spec.uses, cls, params, ctx)
    except ModelfabError as exc:
        update_step(store, run_id, name, status="failed", error=str(exc), ended_at=now())
        return "failed"
    use_cache = spec.cache and cls.cacheable and not no_cache
    hit = find_cached(store, key, cls) if use_cache else None
    if hit is not None:
        update_step(store, run_id, name, status="cached", cache_key=key, params=raw, outputs=hit.outputs,
                    started_at=now(), ended_at=now(), meta={"cached_from": {"run": hit.run_id, "step": hit.name}})
        ctx.log(f"cached: outputs of run {hit.run_id} step {hit.name}")
        return "cached"
    update_step(store, run_id, name, status="running", cache_key=key, params=raw, started_at=now(), ended_at=None,
                error=None, meta={"attempts": attempts + 1, **driver_info()})
    ctx.log(f"start {spec.uses} (attempt {attempts + 1}{', resuming' if ctx.resume else ''})")
    try:
        result = cls().run(ctx, params)
        missing = [o for o in cls.outputs if o not in result]
        if missing:
            raise ConfigError(f"step {name!r} ({spec.uses}) returned no {', '.join(missing)}")
    except StepWaiting as exc:
        ctx.log(f"waiting: {exc}")
        update_step(store, run_id, name, status="waiting", error=str(exc), meta={"record": ctx.record})
        return "waiting"
    except ModelfabError as exc:
        ctx.log(f"failed: {exc}")
        update_step(store, run_id, name, status="failed", error=str(exc), ended_at=now(), meta={"record": ctx.record})
        return "failed"
    except Exception as exc:  # a bug or a library error: keep the traceback in the step's log
        ctx.log("failed with an unexpected error:\n" + traceback.format_exc())
        update_step(store, run_id, name, status="failed", error=f"{type(exc).__name__}: {exc}", ended_at=now(),
                    meta={"record": ctx.record})
        return "failed"
    ctx.log(f"done: {result}")
    update_step(store, run_id, name, status="succeeded", outputs=result, ended_at=now(), meta={"record": ctx.record})
    return "succeeded"


@dataclass
class RunSummary:
    """How a drive ended."""

    run_id: str
    status: str  # succeeded | failed | waiting | cancelled
    steps: dict[str, PipelineStep] = field(default_factory=dict)
    message: str = ""


def drive(store: Store, run_id: str, executor: Any, on_event: Event | None = None) -> RunSummary:
    """Submit every step whose dependencies are done, until nothing more can run."""
    plan = plan_of_run(store, run_id)
    running: dict[str, Any] = {}
    while True:
        rows = steps_of(store, run_id)
        if pipeline_run(store, run_id).status == "cancelled":
            break
        done = {n for n, r in rows.items() if r.status in DONE}
        ready = [n for n in plan.order if rows[n].status == "pending" and n not in running
                 and all(d in done for d in plan.deps[n])]
        if not executor.parallel:
            ready = ready[: max(0, 1 - len(running))]
        for n in ready:
            if on_event:
                on_event("start", rows[n])
            running[n] = executor.submit(n, plan.loaded.spec.steps[n].resources)
        if not running:
            break
        for n in executor.wait_any(running):
            handle = running.pop(n)
            crash = executor.error(handle)
            if crash:
                update_step(store, run_id, n, status="failed", error=crash, ended_at=now())
            if on_event:
                on_event("end", steps_of(store, run_id)[n])
    return finish(store, run_id, plan)


def finish(store: Store, run_id: str, plan: PipelinePlan) -> RunSummary:
    """Mark steps that cannot run as skipped and set the run's final status."""
    rows = steps_of(store, run_id)
    failed = [n for n in plan.order if rows[n].status == "failed"]
    waiting = [n for n in plan.order if rows[n].status == "waiting"]
    if pipeline_run(store, run_id).status == "cancelled":
        for n, r in rows.items():
            if r.status == "pending":
                update_step(store, run_id, n, status="cancelled")
        return RunSummary(run_id, "cancelled", steps_of(store, run_id), "cancelled")
    for n in downstream(plan.deps, set(failed)):
        if rows[n].status == "pending":
            update_step(store, run_id, n, status="skipped", error=f"needs a failed step ({', '.join(failed)})")
    rows = steps_of(store, run_id)
    outputs = {n: r.outputs for n, r in rows.items() if r.status in DONE}
    seconds = {n: (r.ended_at - r.started_at).total_seconds() for n, r in rows.items()
               if r.started_at and r.ended_at}
    if failed:
        status, message = "failed", f"step {failed[0]} failed: {rows[failed[0]].error}"
    elif waiting:
        status, message = "waiting", str(rows[waiting[0]].error)
    else:
        status, message = "succeeded", f"{len(rows)} steps done"
    update_run(store, run_id, status=status, outputs=outputs, metrics={"seconds": seconds},
               error=None if status == "succeeded" else message, ended_at=now())
    return RunSummary(run_id, status, rows, message)


def run_pipeline(store: Store, plan: PipelinePlan, *, executor: str = "local", address: str | None = None,
                 no_cache: bool = False, overrides: dict[str, Any] | None = None,
                 on_event: Event | None = None, echo: Callable[[str], None] | None = None,
                 on_created: Callable[[str], None] | None = None) -> RunSummary:
    """Create and drive a run."""
    from modelfab.flow.executors import make_executor

    ex = make_executor(executor, store, address=address, echo=echo)
    run_id = create_run(store, plan, executor=executor, no_cache=no_cache, overrides=overrides)
    if on_created:
        on_created(run_id)
    try:
        ex.bind(run_id, no_cache)
        return drive(store, run_id, ex, on_event)
    finally:
        ex.close()


def resume_run(store: Store, run_id: str, *, executor: str | None = None, address: str | None = None,
               on_event: Event | None = None, echo: Callable[[str], None] | None = None) -> RunSummary:
    """Continue a crashed, failed, waiting or cancelled run: finished steps are never repeated."""
    from modelfab.flow.executors import make_executor

    if pipeline_run(store, run_id).status == "succeeded":
        raise ConflictError(f"run {run_id} already succeeded; nothing to resume")
    run = claim(store, run_id)
    reset_for_resume(store, run_id)
    name = executor or run.config.get("executor", "local")
    ex = make_executor(name, store, address=address, echo=echo)
    try:
        ex.bind(run_id, bool(run.config.get("no_cache")))
        return drive(store, run_id, ex, on_event)
    finally:
        ex.close()


def approve_step(store: Store, run_id: str, step: str | None, *, by: str, approved: bool = True,
                 comment: str = "") -> str:
    """Record a manual decision on a waiting ``approve`` step (who and when); returns the step name."""
    rows = steps_of(store, run_id)
    gates = [n for n, r in rows.items() if r.uses == "approve" and r.status in ("waiting", "pending")]
    if step is None:
        if len(gates) != 1:
            open_gates = ", ".join(gates) or "none"
            raise ConfigError(f"--step: run {run_id} has {len(gates)} open approve steps ({open_gates})")
        step = gates[0]
    if step not in rows or rows[step].uses != "approve":
        raise ConfigError(f"--step: {step!r} is not an approve step of run {run_id}")
    if rows[step].status in DONE:
        raise ConflictError(f"step {step} of run {run_id} is already {rows[step].status}")
    if not by.strip():
        raise ConfigError("--by: say who approves")
    decision = {"approved": approved, "by": by, "at": now().isoformat(timespec="seconds"), "comment": comment}
    update_step(store, run_id, step, meta={"approval": decision})
    return step


def cancel_run(store: Store, run_id: str) -> bool:
    """Mark a run cancelled (pending steps will not start); signals its driver if it lives here."""
    import os
    import signal

    from modelfab.flow.state import driver_alive

    run = pipeline_run(store, run_id)
    if run.status in ("succeeded", "failed", "cancelled"):
        raise ConflictError(f"run {run_id} is already {run.status}")
    update_run(store, run_id, status="cancelled", error="cancelled", ended_at=now())
    for n, r in steps_of(store, run_id).items():
        if r.status in ("pending", "waiting", "running"):
            update_step(store, run_id, n, status="cancelled", ended_at=now())
    if driver_alive(run):
        os.kill(int(run.config["driver"]["pid"]), signal.SIGTERM)
        return True
    return False
