"""Named registries for plug-ins (model builders, tuners, scorers, executors, stores, ...).

A :class:`Catalog` maps a name to a builder plus an optional config model.  Duplicate names are
rejected; an unknown name raises :class:`~modelfab.core.errors.NotFoundError` listing the known
names.  Third-party packages plug in through the entry-point group ``modelfab.<kind>``: each entry
point is a callable taking the catalog and registering into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from modelfab.core.errors import ConflictError, NotFoundError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plug-in: its name, the builder, its config model and a one-line summary."""

    name: str
    builder: T
    config: type | None
    summary: str


class Catalog(Generic[T]):
    """A named registry of one plug-in kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str, *, config: type | None = None, summary: str = "") -> Callable[[T], T]:
        """Decorator registering ``builder`` under ``name``; a duplicate name raises ConflictError."""

        def decorate(builder: T) -> T:
            self.add(name, builder, config=config, summary=summary)
            return builder

        return decorate

    def add(self, name: str, builder: T, *, config: type | None = None, summary: str = "") -> None:
        """Register ``builder`` under ``name`` (non-decorator form)."""
        if not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._entries:
            raise ConflictError(f"{self.kind} {name!r} is already registered")
        doc = (getattr(builder, "__doc__", None) or "").strip().splitlines()
        self._entries[name] = Entry(name, builder, config, summary or (doc[0] if doc else ""))

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name``; unknown names raise NotFoundError listing the known ones."""
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise NotFoundError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def get(self, name: str) -> T:
        """The builder registered under ``name``."""
        return self.entry(name).builder

    def names(self) -> list[str]:
        """Sorted names of every registered entry."""
        self.load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self.load_plugins()
        return iter([self._entries[n] for n in sorted(self._entries)])

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)

    def load_plugins(self) -> None:
        """Load third-party entries from the entry-point group ``modelfab.<kind>`` (once)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=f"modelfab.{self.kind}"):
            hook = ep.load()
            hook(self)

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register temporary plug-ins)."""
        self._entries.pop(name, None)


def contract_params(catalog: Catalog[Any]) -> list[Any]:
    """Parameters for a pytest contract suite: one ``pytest.param`` per catalog entry, id = name.

    Usage::

        @pytest.mark.parametrize("entry", contract_params(SCORERS))
        def test_roundtrip(entry): ...
    """
    import pytest

    return [pytest.param(e, id=e.name) for e in catalog]
