"""Pipeline specs: YAML -> typed models. Errors name the field path and the YAML line.

A pipeline is a mapping of named steps; each ``uses:`` a step of the catalog with ``with:``
parameters, may reference earlier outputs (``${{ steps.screen.outputs.dataset }}``) or pipeline
parameters (``${{ params.shots }}``), and orders itself with ``needs:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelfab.core.errors import ConfigError

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,99}$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_memory(value: str | int | float | None) -> int | None:
    """``"2GB"`` / ``"512MiB"`` / ``1e9`` -> bytes."""
    if value is None or isinstance(value, int | float):
        return None if value is None else int(value)
    m = _MEMORY.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory size such as 2GB or 512MiB")
    unit = (m.group(2) or "").lower()
    scale = _UNITS[unit[:1]] if "i" not in unit else 1024 ** (" kmgt".index(unit[0]))
    return int(float(m.group(1)) * scale)


class Resources(BaseModel):
    """What a step needs from an executor (the Ray executor reserves it)."""

    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(default=1.0, ge=0)
    gpus: float = Field(default=0.0, ge=0)
    memory: str | int | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        parse_memory(v)
        return v

    @property
    def memory_bytes(self) -> int | None:
        return parse_memory(self.memory)


class StepSpec(BaseModel):
    """One step: which catalog entry it uses, its parameters and its ordering."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    cache: bool = True
    resources: Resources = Field(default_factory=Resources)
    description: str = ""


class PipelineSpec(BaseModel):
    """A whole pipeline."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r}: use lower-case letters, digits, '-' and '_' (start with a letter)")
        return v

    @field_validator("steps")
    @classmethod
    def _step_names(cls, v: dict[str, StepSpec]) -> dict[str, StepSpec]:
        for name in v:
            if not NAME.match(str(name)):
                raise ValueError(f"step name {name!r}: use lower-case letters, digits, '-' and '_'")
        return v


@dataclass
class LoadedSpec:
    """A validated spec with its source text and the YAML line of every field path."""

    spec: PipelineSpec
    text: str
    source: str
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)

    def line_of(self, path: tuple[str, ...]) -> int | None:
        """The line of ``path`` or of its deepest existing parent."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def where(self, path: tuple[str, ...]) -> str:
        """``steps.tune.with.base (line 12)``."""
        line = self.line_of(path)
        dotted = ".".join(path)
        return f"{dotted} (line {line})" if line else dotted


def _line_map(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _line_map(value, (*path, str(i)), out)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """``--set params.shots=20`` or ``--set steps.tune.with.method=lora`` (a bare key means params.KEY)."""
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) == 1:
            parts = ["params", parts[0]]
        target: Any = data
        for part in parts[:-1]:
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a mapping")
            target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {key}: cannot set inside a non-mapping")
        target[parts[-1]] = value


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["shots=20", "steps.tune.with.method=lora"]`` -> dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_spec_text(text: str, source: str = "<pipeline>", overrides: dict[str, Any] | None = None) -> LoadedSpec:
    """Parse and validate a pipeline. Broken YAML or a bad field -> :class:`ConfigError` with path and line."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise ConfigError(f"{source}: broken YAML{where}: {problem}") from None
    if not isinstance(data, dict) or node is None:
        raise ConfigError(f"{source}: a pipeline is a YAML mapping with 'name' and 'steps'")
    lines: dict[tuple[str, ...], int] = {}
    _line_map(node, (), lines)
    if overrides:
        apply_overrides(data, overrides)
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = tuple("with" if p == "with_" else str(p) for p in err["loc"])
        loaded = LoadedSpec(PipelineSpec.model_construct(name="?", steps={}), text, source, lines)
        raise ConfigError(f"{source}: {loaded.where(path)}: {err['msg']}") from None
    return LoadedSpec(spec, text, source, lines)


def load_spec(path: Path, overrides: dict[str, Any] | None = None) -> LoadedSpec:
    """Read and validate a pipeline file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return load_spec_text(text, str(path), overrides)
