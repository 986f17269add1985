"""Executors (a catalog): how the steps of a run are executed.

``local``: in this process, one step at a time in topological order.
``ray``: each step is a Ray task with its resources (cpus, gpus, memory), on a local Ray instance
or a cluster (``address``); independent steps run at the same time. Workers open the same store
(the settings travel with the task), so the store must be reachable from every node: the shared
SQLite file on one machine, PostgreSQL + a shared artifact URL on a cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from modelfab.core.catalog import Catalog
from modelfab.core.config import Settings
from modelfab.core.errors import ConfigError
from modelfab.core.optional import import_optional
from modelfab.flow.spec import Resources
from modelfab.store.store import Store


class Executor(ABC):
    """Contract: ``bind`` to a run, ``submit`` steps, ``wait_any`` for finished ones, ``close``."""

    parallel = True  # whether independent steps may be submitted before earlier ones finish

    def __init__(self, store: Store, *, address: str | None = None, echo: Callable[[str], None] | None = None):
        self.store = store
        self.address = address
        self.echo = echo
        self.run_id = ""
        self.no_cache = False

    def bind(self, run_id: str, no_cache: bool) -> None:
        self.run_id, self.no_cache = run_id, no_cache

    @abstractmethod
    def submit(self, step: str, resources: Resources) -> Any:
        """Start (or, for a sequential executor, run) one step; returns a handle."""

    @abstractmethod
    def wait_any(self, handles: dict[str, Any]) -> list[str]:
        """Block until at least one submitted step has finished; returns the finished steps' names."""

    def error(self, handle: Any) -> str | None:
        """Why a submitted step died without recording its outcome (None: it recorded it)."""
        return None

    def close(self) -> None:  # noqa: B027  (optional hook: most executors hold nothing to release)
        """Release what the executor holds (a Ray connection it opened)."""


EXECUTORS: Catalog[type[Executor]] = Catalog("executor")


@EXECUTORS.register("local", summary="in this process, one step at a time")
class LocalExecutor(Executor):
    parallel = False

    def submit(self, step: str, resources: Resources) -> Any:
        from modelfab.flow.engine import execute_step

        return execute_step(self.store, self.run_id, step, no_cache=self.no_cache, echo=self.echo)

    def wait_any(self, handles: dict[str, Any]) -> list[str]:
        return list(handles)


def _settings_dict(settings: Settings) -> dict[str, str]:
    return {"home": str(settings.home), "db_url": settings.db_url, "artifacts_url": settings.artifacts_url}


def ray_step(settings: dict[str, str], run_id: str, step: str, no_cache: bool) -> str:
    """The body of a Ray task: open the store and execute one step (its outcome goes to the store)."""
    from pathlib import Path

    from modelfab.flow.engine import execute_step

    store = Store(Settings(home=Path(settings["home"]), db_url=settings["db_url"],
                           artifacts_url=settings["artifacts_url"]))
    try:
        return execute_step(store, run_id, step, no_cache=no_cache)
    finally:
        store.close()


@EXECUTORS.register("ray", summary="each step a Ray task with its resources, on a local instance or a cluster")
class RayExecutor(Executor):
    def __init__(self, store: Store, *, address: str | None = None, echo: Callable[[str], None] | None = None):
        super().__init__(store, address=address, echo=echo)
        self.ray = ray = import_optional("ray", "ray", "ray")
        self._owns = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, ignore_reinit_error=True)
            except ConnectionError as exc:
                raise ConfigError(f"--address {address}: cannot connect to a Ray cluster: {exc}") from None
            self._owns = True
        self._remote = ray.remote(ray_step)
        self._settings = _settings_dict(store.settings)
        self._names: dict[Any, str] = {}
        self._errors: dict[Any, str] = {}

    def submit(self, step: str, resources: Resources) -> Any:
        opts: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": 0}
        if resources.memory_bytes:
            opts["memory"] = resources.memory_bytes
        ref = self._remote.options(**opts).remote(self._settings, self.run_id, step, self.no_cache)
        self._names[ref] = step
        return ref

    def wait_any(self, handles: dict[str, Any]) -> list[str]:
        refs = list(handles.values())
        ready, _ = self.ray.wait(refs, num_returns=1)
        out = []
        for ref in ready:
            try:
                self.ray.get(ref)
            except Exception as exc:  # the worker died (OOM, killed) before recording an outcome
                self._errors[ref] = f"the Ray task died: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            out.append(self._names.pop(ref))
        return out

    def error(self, handle: Any) -> str | None:
        return self._errors.pop(handle, None)

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def make_executor(name: str, store: Store, *, address: str | None = None,
                  echo: Callable[[str], None] | None = None) -> Executor:
    if name != "ray" and address:
        raise ConfigError("--address is only for --executor ray")
    return EXECUTORS.get(name)(store, address=address, echo=echo)
