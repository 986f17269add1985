"""The auto-learning strategy pool: tuning recipes ranked by how they did on similar datasets.

Every tune run records the dataset's meta-features, the recipe and its validation score (a Run
of kind ``tune``). For a new dataset, each recipe's expected score is a similarity-weighted mean
of its past scores (Gaussian kernel on standardised meta-features), shrunk towards a prior given
by :data:`DEFAULT_ORDER` (cheap and robust first), so the ranking starts sensible and improves
with use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelfab.core.catalog import Catalog
from modelfab.store.runs import list_runs
from modelfab.store.store import Store
from modelfab.tune.config import TuneConfig
from modelfab.tune.metafeatures import NUMERIC_KEYS


@dataclass(frozen=True)
class Recipe:
    """A tuning method with its hyper-parameters and augmentation policy."""

    name: str
    overrides: dict[str, Any]
    summary: str = ""
    requires: dict[str, Any] = field(default_factory=dict)
    """Meta-feature values a dataset must have for this recipe to apply (e.g. two image classes)."""

    def config(self, base: TuneConfig) -> TuneConfig:
        return TuneConfig.model_validate({**base.model_dump(), **self.overrides})

    def applies(self, meta: dict[str, Any]) -> bool:
        return all(meta.get(k) == v for k, v in self.requires.items())


STRATEGIES: Catalog[Recipe] = Catalog("strategy")

_RECIPES = [
    Recipe(
        "probe-linear",
        {"method": "probe", "head": "linear", "prior": "none"},
        "logistic regression on cached frozen features",
    ),
    Recipe(
        "probe-mlp",
        {"method": "probe", "head": "mlp", "hidden": 256, "prior": "none"},
        "MLP head on cached frozen features",
    ),
    Recipe(
        "probe-prior",
        {"method": "probe", "head": "linear", "prior": "gaussian"},
        "linear probe fused with an anomaly prior fitted on the unlabeled pool (two-class images)",
        requires={"modality": "image", "classes": 2},
    ),
    Recipe(
        "lora-r4",
        {"prior": "none", "method": "lora", "lora_rank": 4, "lr": 1e-3, "epochs": 8, "augment": "light"},
        "LoRA rank 4 on 1x1 convs / linear layers, light augmentation",
    ),
    Recipe(
        "partial-2",
        {"prior": "none", "method": "partial", "partial_blocks": 2, "lr": 1e-3, "epochs": 8, "augment": "light"},
        "train the last two blocks",
    ),
    Recipe(
        "lora-r8",
        {"prior": "none", "method": "lora", "lora_rank": 8, "lr": 2e-3, "epochs": 10, "augment": "strong"},
        "LoRA rank 8, strong augmentation",
    ),
    Recipe(
        "full",
        {"prior": "none", "method": "full", "lr": 3e-4, "backbone_lr_scale": 0.3, "epochs": 8, "augment": "light"},
        "full fine-tuning, low learning rate",
    ),
]
for _r in _RECIPES:
    STRATEGIES.add(_r.name, _r, summary=_r.summary)

DEFAULT_ORDER = [r.name for r in _RECIPES]
PRIOR_WEIGHT = 0.5  # pseudo-observations of the prior per recipe
BANDWIDTH = 1.0  # kernel width in standardised meta-feature units


@dataclass
class PoolRecord:
    """One past tune run as the pool sees it."""

    run_id: str
    recipe: str
    score: float
    meta: dict[str, Any]
    data: str


@dataclass
class Ranked:
    recipe: str
    expected: float
    support: float  # sum of similarity weights behind the estimate
    runs: int
    prior: float
    neighbours: list[str] = field(default_factory=list)


def pool_records(store: Store) -> list[PoolRecord]:
    """Every successful tune run with a recipe, meta-features and a validation score."""
    out = []
    for run in list_runs(store, "tune", limit=100_000):
        m = run.metrics or {}
        if run.status == "succeeded" and "meta" in m and "score" in m and m.get("recipe") in STRATEGIES:
            out.append(PoolRecord(run.id, m["recipe"], float(m["score"]), m["meta"], str(m.get("data", ""))))
    return out


def prior(recipe: str) -> float:
    """Prior expected score: 0.6 for the first default recipe, a little less for each later one."""
    return 0.6 - 0.01 * DEFAULT_ORDER.index(recipe)


def _vector(meta: dict[str, Any]) -> list[float]:
    return [float(meta.get(k, 0.0)) for k in NUMERIC_KEYS]


def rank(store: Store, meta: dict[str, Any], records: list[PoolRecord] | None = None) -> list[Ranked]:
    """Recipes ordered by expected validation score on a dataset with these meta-features."""
    records = [
        r
        for r in (records if records is not None else pool_records(store))
        if r.meta.get("modality") == meta.get("modality")
    ]
    vectors = [_vector(r.meta) for r in records] + [_vector(meta)]
    dims = len(NUMERIC_KEYS)
    means = [sum(v[i] for v in vectors) / len(vectors) for i in range(dims)]
    stds = [max(math.sqrt(sum((v[i] - means[i]) ** 2 for v in vectors) / len(vectors)), 1e-3) for i in range(dims)]
    target = _vector(meta)
    ranked = []
    for name in DEFAULT_ORDER:
        if not STRATEGIES.get(name).applies(meta):
            continue
        mine = [r for r in records if r.recipe == name]
        weights = []
        for r in mine:
            d2 = sum(((a - b) / s) ** 2 for a, b, s in zip(_vector(r.meta), target, stds, strict=True))
            weights.append(math.exp(-d2 / (2 * BANDWIDTH**2)))
        p = prior(name)
        support = sum(weights)
        expected = (sum(w * r.score for w, r in zip(weights, mine, strict=True)) + PRIOR_WEIGHT * p) / (
            support + PRIOR_WEIGHT
        )
        near = [r.data for _, r in sorted(zip(weights, mine, strict=True), key=lambda t: -t[0])[:3]]
        ranked.append(Ranked(name, expected, support, len(mine), p, near))
    return sorted(ranked, key=lambda r: (-r.expected, DEFAULT_ORDER.index(r.recipe)))


def recipe_for(cfg: TuneConfig) -> str | None:
    """The pool recipe a plain config matches (all of its settings equal), so that manual runs
    feed the pool too; None for custom settings."""
    values = cfg.model_dump()
    for recipe in _RECIPES:
        if all(values.get(k) == v for k, v in recipe.overrides.items()):
            return recipe.name
    return None
