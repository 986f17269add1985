"""A screener (feature extractor + fitted scorer), registered as an L2 of task ``screening``.

The model's weights are the scorer's arrays (safetensors), its card holds the scorer name, the
resolved config and the fitted facts (JSON); its parent is the backbone model, so loading
rebuilds the backbone from the registry (L0/L1 directly, an L2 through its adapted backbone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from modelfab.core.errors import ConfigError, DataError
from modelfab.screen.base import Scorer, build_scorer
from modelfab.screen.features import FeatureExtractor
from modelfab.store.models import model_card
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.zoo.base import Backbone
from modelfab.zoo.registry import load_registered

SCREEN_TASK = "screening"
Loader = Callable[[Any], Any]


@dataclass
class Screener:
    """Images -> anomaly scores: a feature extractor feeding a scorer."""

    scorer: Scorer
    extractor: FeatureExtractor
    batch_size: int = 16

    def _features(self, items: Sequence[Any], load: Loader | None) -> Iterator[Tensor]:
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            yield self.extractor([load(i) for i in chunk] if load else list(chunk))

    def fit(self, items: Sequence[Any], load: Loader | None = None) -> None:
        """Fit the scorer on normal images (or on whatever ``load`` turns ``items`` into)."""
        if len(items) == 0:
            raise DataError("no normal images to fit")
        from modelfab.core.progress import track

        batches = self._features(items, load)
        self.scorer.fit(track(batches, -(-len(items) // self.batch_size), f"fit {self.scorer.name}"))

    def score(self, items: Sequence[Any], load: Loader | None = None) -> tuple[Tensor, Tensor | None]:
        """Scores (N,) and anomaly maps (N, h, w) (None for embedding scorers)."""
        if len(items) == 0:
            raise DataError("no images to score")
        from modelfab.core.progress import track

        scores, maps = [], []
        total = -(-len(items) // self.batch_size)
        for feats in track(self._features(items, load), total, f"score {self.scorer.name}"):
            out = self.scorer.score(feats)
            scores.append(out.scores)
            if out.maps is not None:
                maps.append(out.maps)
        return torch.cat(scores), (torch.cat(maps) if maps else None)


def load_vision_backbone(store: Store, ref: str) -> tuple[Backbone, Model]:
    """A registered backbone to screen with: an L0/L1 as stored, an L2 as its adapted backbone."""
    model = store.get_model(ref)
    if model.tier == "L2":
        if model.task == SCREEN_TASK:
            raise ConfigError(f"backbone: {ref!r} is a screening model; give a backbone (L0, L1 or a tuned L2)")
        from modelfab.tune import load_scenario

        return load_scenario(store, model.id).backbone, model
    return load_registered(store, model.id)


def make_screener(backbone: Backbone, scorer: str, config: dict[str, Any] | None = None) -> Screener:
    """A fresh screener; the config's ``image_size`` is resolved to the size actually used."""
    sc = build_scorer(scorer, config)
    extractor = FeatureExtractor(backbone, sc.config, sc.kind)
    if sc.config.image_size != extractor.image_size:
        sc = build_scorer(scorer, sc.config.model_copy(update={"image_size": extractor.image_size}))
        extractor.cfg = sc.config
    return Screener(sc, extractor)


def register_screener(
    store: Store, screener: Screener, *, name: str, backbone_model: Model, normal_version: int,
    normal_ref: str, run_id: str | None, metrics: dict[str, Any],
) -> Model:
    """Store the scorer's arrays (before the row) and register the L2 screening model."""
    sc = screener.scorer
    tensors = {k: v.contiguous() for k, v in sc.state().items()}
    weights = store.artifacts.put_tensors(tensors, {"format": "modelfab-screen", "scorer": sc.name})
    info = {"scorer": sc.name, "kind": sc.kind, "config": sc.config.model_dump(), "backbone": backbone_model.id,
            "normal": normal_ref, "fitted": sc.meta(), "run": run_id}
    return store.register_model(
        name=name, tier="L2", task=SCREEN_TASK, parent=backbone_model.id, dataset_version=normal_version,
        arch={"scorer": sc.name, "kind": sc.kind, "backbone": backbone_model.name, "layers": sc.config.layers,
              "image_size": sc.config.image_size},
        config={"scorer": sc.name, **sc.config.model_dump()}, metrics=metrics,
        params=sum(int(t.numel()) for t in tensors.values()), trainable_params=0,
        weights=weights, card={"screen": info},
    )


def load_screener(store: Store, ref: str) -> tuple[Screener, Model]:
    """Rebuild a registered screening model: backbone from its parent, scorer from its arrays."""
    model = store.get_model(ref)
    card = model_card(store, model.id)
    info = card.get("screen")
    if model.task != SCREEN_TASK or not info or not model.weights_digest:
        raise ConfigError(f"model {ref!r} ({model.tier}, task {model.task}) is not a screening model")
    backbone, _ = load_vision_backbone(store, info["backbone"])
    screener = make_screener(backbone, info["scorer"], info["config"])
    screener.scorer.load_state(store.artifacts.get_tensors(model.weights_digest), dict(info.get("fitted") or {}))
    return screener, model
