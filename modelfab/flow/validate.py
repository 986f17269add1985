"""Static checks of a pipeline before anything runs: steps, parameters, references, kinds, cycles.

Every error is a :class:`ConfigError` naming the field path and its YAML line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelfab.core.errors import ConfigError, ModelfabError
from modelfab.flow.graph import topological_order
from modelfab.flow.refs import Ref, iter_refs, resolve
from modelfab.flow.spec import LoadedSpec
from modelfab.flow.steps import STEPS
from modelfab.store.store import Store

_PLACEHOLDER: dict[str, Any] = {"number": 1, "bool": False, "mapping": {}}


@dataclass
class PipelinePlan:
    """A validated pipeline: its spec, parameter-substituted ``with:`` blocks and the step graph."""

    loaded: LoadedSpec
    params: dict[str, Any]
    with_: dict[str, dict[str, Any]]  # step -> ``with:`` after ${{ params.* }} substitution
    deps: dict[str, list[str]]
    order: list[str]

    @property
    def name(self) -> str:
        return self.loaded.spec.name


def substitute_params(value: Any, params: dict[str, Any], where: str) -> Any:
    """Replace ``${{ params.X }}``; step references stay for run time."""

    def lookup(ref: Ref) -> Any:
        if ref.kind == "param":
            if ref.name not in params:
                raise ConfigError(f"{where}: params.{ref.name} is not defined (params: {', '.join(params) or 'none'})")
            return params[ref.name]
        return "${{ " + ref.text + " }}"

    return resolve(value, lookup)


def _check_params(loaded: LoadedSpec, name: str, uses: str, with_: dict[str, Any]) -> None:
    cls = STEPS.get(uses)
    fields = cls.Params.model_fields
    base = ("steps", name, "with")
    for key in with_:
        if key not in fields:
            raise ConfigError(f"{loaded.where((*base, key))}: step {uses!r} has no parameter {key!r} "
                              f"(parameters: {', '.join(fields)})")
    for fname, info in fields.items():
        if info.is_required() and fname not in with_:
            raise ConfigError(f"{loaded.where(base)}: step {uses!r} needs parameter {fname!r}")
    dynamic = {k for k, v in with_.items() if any(True for _ in iter_refs(v))}
    sample = {}
    for k, v in with_.items():
        if k in dynamic:
            kind = cls.kinds.get(k, "text")
            sample[k] = _PLACEHOLDER.get(kind, "placeholder")
        else:
            sample[k] = v
    try:
        cls.Params.model_validate(sample)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            if (loc and loc[0] in dynamic) or (not loc and dynamic):
                continue
            raise ConfigError(f"{loaded.where((*base, *loc))}: {err['msg']}") from None
    except ModelfabError as exc:
        raise ConfigError(f"{loaded.where(base)}: {exc}") from None


def _check_literals(loaded: LoadedSpec, name: str, uses: str, with_: dict[str, Any], store: Store) -> None:
    """Literal model / dataset references must exist in the store now."""
    cls = STEPS.get(uses)
    for key, kind in cls.kinds.items():
        value = with_.get(key)
        if not isinstance(value, str) or any(True for _ in iter_refs(value)):
            continue
        where = loaded.where(("steps", name, "with", key))
        try:
            if kind == "model":
                store.get_model(value)
            elif kind == "dataset":
                store.get_dataset_version(value.partition(":")[0])
        except ModelfabError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def validate(loaded: LoadedSpec, store: Store | None = None) -> PipelinePlan:
    """Check everything that can be checked without running; returns the plan."""
    spec = loaded.spec
    params = dict(spec.params)
    with_all: dict[str, dict[str, Any]] = {}
    deps: dict[str, list[str]] = {}
    for name, step in spec.steps.items():
        if step.uses not in STEPS:
            raise ConfigError(f"{loaded.where(('steps', name, 'uses'))}: unknown step {step.uses!r}; "
                              f"known: {', '.join(STEPS.names())}")
        with_ = substitute_params(step.with_, params, loaded.where(("steps", name, "with")))
        with_all[name] = with_
        cls = STEPS.get(step.uses)
        needed = list(step.needs)
        for i, need in enumerate(step.needs):
            if need not in spec.steps:
                raise ConfigError(f"{loaded.where(('steps', name, 'needs', str(i)))}: unknown step {need!r}")
        for path, ref, whole in iter_refs(with_):
            where = loaded.where(("steps", name, "with", *path))
            if ref.kind != "step":
                continue
            if ref.name not in spec.steps:
                raise ConfigError(f"{where}: '{ref.text}' refers to a missing step {ref.name!r}")
            if ref.name == name:
                raise ConfigError(f"{where}: step {name!r} refers to its own output (cycle {name} -> {name})")
            producer = STEPS.get(spec.steps[ref.name].uses)
            if ref.output not in producer.outputs:
                raise ConfigError(f"{where}: step {ref.name!r} ({spec.steps[ref.name].uses}) has no output "
                                  f"{ref.output!r} (outputs: {', '.join(producer.outputs)})")
            want = cls.kinds.get(path[0]) if path else None
            have = producer.outputs[ref.output]
            if whole and want and not ref.path and have != want:
                raise ConfigError(f"{where}: type mismatch: {ref.text} is a {have}, but parameter {path[0]!r} "
                                  f"of step {step.uses!r} takes a {want}")
            if ref.name not in needed:
                needed.append(ref.name)
        deps[name] = needed
        _check_params(loaded, name, step.uses, with_)
    order = topological_order(deps)
    if store is not None:
        for name in order:
            _check_literals(loaded, name, spec.steps[name].uses, with_all[name], store)
    return PipelinePlan(loaded, params, with_all, deps, order)

