"""Active-learning selectors, a catalog: which unlabeled items a human should label next.

A selector sees a :class:`Pool` (the unlabeled candidates' embeddings, optionally their class
probabilities from a model, and the embeddings of the items already labeled) and returns a
:class:`Selection` of exactly ``budget`` distinct pool indices, in the order a labeler should take
them.  Entries:

- ``uncertainty``: the items the model is least sure about (entropy, margin or least confidence).
- ``diversity``: k-center greedy on embeddings, seeded from the labeled set (core-set selection,
  Sener & Savarese 2018): each pick is the candidate farthest from everything labeled or picked.
- ``hybrid``: the ``candidates * budget`` most uncertain items, then k-center greedy among them, so
  the batch is uncertain *and* not redundant (one uncertain cluster does not fill the budget).
- ``badge``: k-means++ seeding on last-layer gradient embeddings (Ash et al. 2020): uncertainty
  and diversity in one step, with no candidate-pool size (see :mod:`modelfab.screen.badge`).
- ``random``: a seeded uniform draw, the baseline every other entry must beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelfab.core.catalog import Catalog
from modelfab.core.errors import ConfigError, DataError
from modelfab.screen.badge import gradient_factors, kmeans_pp
from modelfab.screen.kcenter import k_center_greedy, unit_rows
from modelfab.screen.uncertainty import Measure, uncertainty_scores


@dataclass
class Pool:
    """What a selector chooses from."""

    embeddings: np.ndarray  # (N, D) unlabeled candidates
    probs: np.ndarray | None = None  # (N, C) class probabilities of the candidates, if a model is given
    labeled: np.ndarray | None = None  # (M, D) embeddings of items that already carry a label
    exclude: np.ndarray | None = None  # (N,) bool: candidates that must not be chosen (already queued, ...)

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2:
            raise DataError(f"pool embeddings must be (N, D); got shape {self.embeddings.shape}")
        n, d = self.embeddings.shape
        if self.probs is not None:
            self.probs = np.asarray(self.probs, dtype=np.float64)
            if self.probs.ndim != 2 or self.probs.shape[0] != n:
                raise DataError(f"pool probabilities must be ({n}, C); got shape {self.probs.shape}")
        if self.labeled is not None:
            self.labeled = np.asarray(self.labeled, dtype=np.float32).reshape(-1, d)
        if self.exclude is not None:
            self.exclude = np.asarray(self.exclude, dtype=bool)
            if self.exclude.shape != (n,):
                raise DataError(f"pool exclude mask must be ({n},); got shape {self.exclude.shape}")

    @property
    def candidates(self) -> np.ndarray:
        """(K,) indices that may be chosen."""
        n = len(self.embeddings)
        return np.arange(n) if self.exclude is None else np.flatnonzero(~self.exclude)


@dataclass
class Selection:
    """The chosen pool indices in labeling order, with the criterion value at each pick."""

    indices: np.ndarray  # (budget,) int64, distinct
    scores: np.ndarray  # (budget,) uncertainty, k-center distance or random draw
    criterion: str


class Selector(Protocol):
    """Chooses ``budget`` items of a pool; deterministic for a given ``seed``."""

    name: str
    needs_probabilities: bool

    @property
    def cfg(self) -> BaseModel:
        """The selector's typed config."""
        ...

    def select(self, pool: Pool, budget: int, seed: int = 0) -> Selection: ...


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UncertaintyConfig(_Config):
    """Most-uncertain-first selection."""

    measure: Measure = "entropy"
    """entropy, margin (1 - (top1 - top2)) or least-confidence (1 - top1)."""


class DiversityConfig(_Config):
    """k-center greedy (core-set) selection on embeddings."""

    metric: Literal["cosine", "euclidean"] = "cosine"
    """cosine: euclidean distance between centred unit-length embeddings; euclidean: raw embeddings."""


class HybridConfig(_Config):
    """Top uncertain candidates, then k-center greedy among them."""

    measure: Measure = "entropy"
    """Uncertainty measure of the candidate filter."""
    candidates: float = Field(default=4.0, ge=1.0)
    """Candidate pool size as a multiple of the budget (1 = pure uncertainty)."""
    metric: Literal["cosine", "euclidean"] = "cosine"
    """k-center distance among the candidates."""


class BadgeConfig(_Config):
    """k-means++ on gradient embeddings (BADGE)."""

    metric: Literal["cosine", "euclidean"] = "cosine"
    """Embedding space of the gradient factor x: centred unit-length (cosine) or raw."""


class RandomConfig(_Config):
    """Seeded uniform sampling (the baseline)."""


SelectorBuilder = Callable[..., Selector]
SELECTORS: Catalog[SelectorBuilder] = Catalog("selector")


def check_budget(pool: Pool, budget: int) -> np.ndarray:
    """The candidate indices, after checking that ``budget`` of them can be chosen."""
    cand = pool.candidates
    if budget < 1:
        raise ConfigError(f"budget: must be at least 1, got {budget}")
    if budget > len(cand):
        raise DataError(f"budget {budget} exceeds the {len(cand)} unlabeled items in the pool")
    return cand


def _need_probs(pool: Pool, name: str) -> np.ndarray:
    if pool.probs is None:
        raise ConfigError(f"selector {name!r} needs class probabilities: give a model (--model), or labels to fit one")
    return pool.probs


def _ranked(scores: np.ndarray, seed: int) -> np.ndarray:
    """Indices by descending score; ties broken by a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(len(scores))
    return order[np.argsort(-scores[order], kind="stable")]


def _space(pool: Pool, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings in the k-center metric space: (N, D) pool and (M, D) labeled."""
    x, lab = pool.embeddings, pool.labeled
    if metric == "euclidean":
        return x, lab
    both = x if lab is None or len(lab) == 0 else np.concatenate([x, lab])
    mean = both.mean(axis=0, keepdims=True)
    return unit_rows(x - mean), None if lab is None else unit_rows(lab - mean)


@dataclass
class UncertaintySelector:
    cfg: UncertaintyConfig
    name: str = "uncertainty"
    needs_probabilities: bool = True

    def select(self, pool: Pool, budget: int, seed: int = 0) -> Selection:
        cand = check_budget(pool, budget)
        scores = uncertainty_scores(_need_probs(pool, self.name)[cand], self.cfg.measure)  # (K,)
        top = _ranked(scores, seed)[:budget]
        return Selection(cand[top], scores[top], self.cfg.measure)


@dataclass
class DiversitySelector:
    cfg: DiversityConfig
    name: str = "diversity"
    needs_probabilities: bool = False

    def select(self, pool: Pool, budget: int, seed: int = 0) -> Selection:
        cand = check_budget(pool, budget)
        x, lab = _space(pool, self.cfg.metric)
        picks, dist = k_center_greedy(x[cand], lab, budget, seed)
        return Selection(cand[picks], dist, f"k-center {self.cfg.metric} distance")


@dataclass
class HybridSelector:
    cfg: HybridConfig
    name: str = "hybrid"
    needs_probabilities: bool = True

    def select(self, pool: Pool, budget: int, seed: int = 0) -> Selection:
        cand = check_budget(pool, budget)
        scores = uncertainty_scores(_need_probs(pool, self.name)[cand], self.cfg.measure)  # (K,)
        keep = _ranked(scores, seed)[: min(len(cand), int(np.ceil(self.cfg.candidates * budget)))]
        x, lab = _space(pool, self.cfg.metric)
        picks, _ = k_center_greedy(x[cand[keep]], lab, budget, seed)
        chosen = keep[picks]
        return Selection(cand[chosen], scores[chosen], self.cfg.measure)


@dataclass
class BadgeSelector:
    cfg: BadgeConfig
    name: str = "badge"
    needs_probabilities: bool = True

    def select(self, pool: Pool, budget: int, seed: int = 0) -> Selection:
        cand = check_budget(pool, budget)
        probs = _need_probs(pool, self.name)[cand]  # (K, C)
        x, _ = _space(pool, self.cfg.metric)
        picks, dist = kmeans_pp(x[cand], gradient_factors(probs), budget, seed)
        return Selection(cand[picks], dist, "gradient-embedding distance")


@dataclass
class RandomSelector:
    cfg: RandomConfig
    name: str = "random"
    needs_probabilities: bool = False

    def select(self, pool: Pool, budget: int, seed: int = 0) -> Selection:
        cand = check_budget(pool, budget)
        draw = np.random.default_rng(seed).random(len(cand))  # (K,)
        top = np.argsort(draw, kind="stable")[:budget]
        return Selection(cand[top], draw[top], "random draw")


SELECTORS.add("uncertainty", UncertaintySelector, config=UncertaintyConfig, summary="most uncertain first (L2)")
SELECTORS.add("diversity", DiversitySelector, config=DiversityConfig, summary="k-center greedy on embeddings")
SELECTORS.add("hybrid", HybridSelector, config=HybridConfig, summary="top uncertain, then k-center among them")
SELECTORS.add("badge", BadgeSelector, config=BadgeConfig, summary="k-means++ on gradient embeddings (BADGE)")
SELECTORS.add("random", RandomSelector, config=RandomConfig, summary="seeded uniform draw (baseline)")


def build_selector(name: str, config: dict[str, object] | BaseModel | None = None) -> Selector:
    """The selector ``name`` with its typed config (a dict is validated; unknown fields are refused)."""
    entry = SELECTORS.entry(name)
    if entry.config is None or not issubclass(entry.config, BaseModel):
        raise ConfigError(f"selector {name!r} registers no config model")
    cfg = config if isinstance(config, BaseModel) else entry.config.model_validate(config or {})
    if not isinstance(cfg, entry.config):
        raise ConfigError(f"selector {name!r} takes {entry.config.__name__}, not {type(cfg).__name__}")
    return entry.builder(cfg)
