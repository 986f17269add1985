"""The backbone catalog: builder name -> ``build(config) -> Backbone``.

Builders are registered by the modules under ``modelfab.zoo`` (imported explicitly by
``modelfab/zoo/__init__.py``).  Each entry carries its config dataclass; ``build_backbone`` fills
it from keyword overrides and validates the field names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from modelfab.core.catalog import Catalog
from modelfab.core.errors import ConfigError
from modelfab.zoo.base import Backbone

BackboneBuilder = Callable[[Any], Backbone]

BACKBONES: Catalog[BackboneBuilder] = Catalog("backbone")


def make_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The config instance for builder ``name`` with ``overrides`` applied (unknown fields rejected)."""
    entry = BACKBONES.entry(name)
    cls = entry.config
    overrides = dict(overrides or {})
    if cls is None:
        if overrides:
            raise ConfigError(f"backbone {name!r} takes no config; got {sorted(overrides)}")
        return None
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"backbone {name!r}: unknown config field(s) {unknown}; known: {sorted(fields)}")
    return cls(**overrides)


def build_backbone(name: str, **overrides: Any) -> Backbone:
    """Build the catalog entry ``name`` with config ``overrides`` (e.g. ``pretrained=False``)."""
    cfg = make_config(name, overrides)
    return BACKBONES.get(name)(cfg)
