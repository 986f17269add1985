"""The step contract and catalog.

A step is a class with typed parameters (``Params``, the ``with:`` block), the kind of each
reference-carrying parameter (``kinds``) and of each output (``outputs``), and a ``run`` that does
the work through the library's APIs and returns registered artifacts (dataset refs, model ids).
Kinds let the engine reject, before anything runs, a model output wired into a dataset parameter.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from modelfab.core.catalog import Catalog
from modelfab.core.errors import ModelfabError
from modelfab.store.store import Store

KINDS = ("dataset", "model", "deployment", "number", "text", "bool", "mapping")


class StepWaiting(ModelfabError):
    """Raised by a gate (label, manual approve) that needs a person; the message says what to do."""

    exit_code = 3


class StepParams(BaseModel):
    """Base of every step's ``with:`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepContext:
    """What a running step gets from the engine."""

    store: Store
    run_id: str
    step: str
    work_dir: Path  # private folder for checkpoints, exported files and logs
    resume: bool = False  # an earlier attempt of this step started (continue from its checkpoint)
    meta: dict[str, Any] = field(default_factory=dict)  # the step record's meta (approvals)
    log: Callable[[str], None] = print
    record: dict[str, Any] = field(default_factory=dict)  # extra facts the step wants on its record

    def resume_command(self) -> str:
        return f"modelfab runs resume {self.run_id}"


class Step(ABC):
    """Base class of catalog entries."""

    Params: ClassVar[type[StepParams]] = StepParams
    kinds: ClassVar[dict[str, str]] = {}  # parameter -> kind of artifact it takes
    outputs: ClassVar[dict[str, str]] = {}  # output -> kind
    summary: ClassVar[str] = ""
    cacheable: ClassVar[bool] = True  # gates and deployments always run

    def fingerprint(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        """Facts outside the parameters that change the result (e.g. the files of a folder import)."""
        return {}

    @abstractmethod
    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        """Do the work; return every declared output."""


STEPS: Catalog[type[Step]] = Catalog("step")


def register(name: str) -> Callable[[type[Step]], type[Step]]:
    """Class decorator: add a step to the catalog under ``name``."""

    def decorate(cls: type[Step]) -> type[Step]:
        STEPS.add(name, cls, config=cls.Params, summary=cls.summary)
        return cls

    return decorate


def code_hash(cls: type[Step]) -> str:
    """A hash of the step implementation's source (its module), part of every cache key."""
    try:
        source = inspect.getsource(inspect.getmodule(cls) or cls)
    except (OSError, TypeError):
        source = cls.__qualname__
    return hashlib.sha256(source.encode()).hexdigest()[:16]
