"""References inside ``with:`` values: ``${{ steps.NAME.outputs.KEY }}`` and ``${{ params.KEY }}``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modelfab.core.errors import ConfigError

PATTERN = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_STEP = re.compile(r"^steps\.([a-z][a-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_-]+)*)$")
_PARAM = re.compile(r"^params\.([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Ref:
    """One parsed reference. ``kind`` is ``step`` or ``param``; ``path`` digs into a mapping output."""

    kind: str
    name: str  # step name or parameter name
    output: str = ""  # step output key
    path: tuple[str, ...] = ()
    text: str = ""

    def __str__(self) -> str:
        return self.text


def parse_ref(expr: str) -> Ref:
    """Parse the inside of ``${{ ... }}``."""
    m = _STEP.match(expr)
    if m:
        path = tuple(p for p in m.group(3).split(".") if p)
        return Ref("step", m.group(1), m.group(2), path, expr)
    m = _PARAM.match(expr)
    if m:
        return Ref("param", m.group(1), text=expr)
    raise ConfigError(f"'${{{{ {expr} }}}}' is not a reference: use steps.NAME.outputs.KEY or params.KEY")


def iter_refs(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Ref, bool]]:
    """Every reference in a nested value: (field path, ref, is the whole value)."""
    if isinstance(value, str):
        found = list(PATTERN.finditer(value))
        whole = len(found) == 1 and found[0].span() == (0, len(value))
        for m in found:
            yield path, parse_ref(m.group(1)), whole
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_refs(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_refs(v, (*path, str(i)))


def has_ref(value: Any) -> bool:
    return any(True for _ in iter_refs(value))


def resolve(value: Any, lookup: Callable[[Ref], Any]) -> Any:
    """Replace references: a whole-value reference keeps the output's type, others are interpolated."""
    if isinstance(value, str):
        found = list(PATTERN.finditer(value))
        if len(found) == 1 and found[0].span() == (0, len(value)):
            return lookup(parse_ref(found[0].group(1)))
        return PATTERN.sub(lambda m: str(lookup(parse_ref(m.group(1)))), value)
    if isinstance(value, dict):
        return {k: resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup) for v in value]
    return value


def dig(value: Any, path: tuple[str, ...], where: str) -> Any:
    """``value[path[0]][path[1]]...`` with a clear error."""
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise ConfigError(f"{where}: no key {part!r} in the referenced output")
    return value
