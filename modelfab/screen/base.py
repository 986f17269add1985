"""The scorer protocol, its catalog and the feature configuration every scorer shares.

A scorer sees backbone *features*, never images: patch scorers get (N, C, H, W) maps (the
selected taps resized to the finest one, locally averaged, concatenated, optionally projected;
see :mod:`modelfab.screen.features`), embedding scorers get (N, D) pooled vectors.  That split lets
benchmarks cache features once per (backbone, layers, size) and lets any vision backbone (L0, L1
or the adapted backbone of an L2) feed any scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from modelfab.core.catalog import Catalog
from modelfab.core.errors import ConfigError


class FeatureConfig(BaseModel):
    """Which backbone features a scorer reads, and at what resolution."""

    model_config = ConfigDict(extra="forbid")

    layers: list[str] = Field(default_factory=lambda: ["block4", "block10"])
    """Backbone taps (``features(batch, names)``); patch scorers resize coarser maps to the finest."""
    image_size: int | None = Field(default=None, ge=32, le=1024)
    """Input side in pixels; default the backbone's own (ELPV images are 300 px: thin cracks need it)."""
    smooth: int = Field(default=3, ge=1, le=7)
    """Local average kernel over each map (PatchCore's 3x3 neighbourhood aggregation); 1 = none."""
    proj_dim: int | None = Field(default=None, ge=1)
    """Seeded random projection of the concatenated channels to this many dims (None: keep all)."""
    seed: int = 0
    """Seed of the projection and of any sampling."""

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ConfigError(f"layers: need at least one distinct feature name, got {v}")
        return v


@dataclass
class Scores:
    """What a scorer returns for a batch."""

    scores: Tensor  # (N,) higher = more anomalous
    maps: Tensor | None = None  # (N, H, W) per-location anomaly, patch scorers only


@runtime_checkable
class Scorer(Protocol):
    """An anomaly scorer fitted on the features of normal images."""

    name: str
    kind: Literal["patch", "embedding"]

    @property
    def config(self) -> FeatureConfig:
        """The scorer's validated config (a subclass of FeatureConfig)."""
        ...

    def fit(self, batches: Iterable[Tensor]) -> None:
        """Fit on feature batches of normal images: (N, C, H, W) (patch) or (N, D) (embedding)."""
        ...

    def score(self, features: Tensor) -> Scores:
        """Scores (N,) for a feature batch of the same kind, higher = more anomalous."""
        ...

    def state(self) -> dict[str, Tensor]:
        """Fitted arrays (stored as safetensors)."""
        ...

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, object]) -> None:
        """Restore what :meth:`state` and :meth:`meta` returned."""
        ...

    def meta(self) -> dict[str, object]:
        """JSON-able facts of the fitted state (sizes, memory)."""
        ...


ScorerBuilder = Callable[[FeatureConfig], Scorer]

SCORERS: Catalog[ScorerBuilder] = Catalog("scorer")


def build_scorer(name: str, config: FeatureConfig | dict[str, object] | None = None) -> Scorer:
    """Build catalog entry ``name`` from its config model (a dict is validated; unknown keys refused)."""
    entry = SCORERS.entry(name)
    cls = entry.config
    if cls is None or not issubclass(cls, FeatureConfig):
        raise ConfigError(f"scorer {name!r} has no config model")
    if config is None:
        cfg = cls()
    elif isinstance(config, dict):
        cfg = cls.model_validate(config)
    elif isinstance(config, cls):
        cfg = config
    else:
        raise ConfigError(f"scorer {name!r} takes a {cls.__name__}, got {type(config).__name__}")
    return entry.builder(cfg)
