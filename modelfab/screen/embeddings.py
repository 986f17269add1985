"""Frozen embeddings (and, from an L2, class probabilities) of stored items for selection and checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modelfab.core.errors import ConfigError
from modelfab.store.datasets import ItemRow
from modelfab.store.store import Store

MODALITY_OF_BASE = {"vision": "image", "text": "text", "lm": "text"}


@dataclass
class EmbeddingSource:
    """Where embeddings come from: a registered backbone, or an L2 (its backbone + its task head)."""

    ref: str  # the model asked for
    model_id: str
    features: Callable[[list[ItemRow]], torch.Tensor]  # rows -> (N, D)
    head: nn.Module | None = None  # L2 only: (N, D) embeddings -> (N, C) logits
    classes: list[str] | None = None  # L2 only: class order of ``head``
    predict: Callable[[list[ItemRow]], torch.Tensor] | None = None
    """L2s whose output is more than the head on the embeddings (an anomaly prior): rows -> (N, C) probabilities."""

    def embed(self, rows: list[ItemRow]) -> np.ndarray:
        """(N, D) float32 embeddings."""
        if not rows:
            return np.empty((0, 0), dtype=np.float32)
        return self.features(rows).float().numpy()

    def probabilities(self, embeddings: np.ndarray, rows: list[ItemRow]) -> np.ndarray | None:
        """(N, C) class probabilities of ``rows`` (whose ``embeddings`` these are) from the L2, or None for
        a plain backbone. A probe's head reads the embeddings; an L2 with an anomaly prior runs whole."""
        if self.head is None:
            return None
        if self.predict is not None:
            return self.predict(rows).double().numpy()
        with torch.inference_mode():
            return torch.softmax(self.head(torch.from_numpy(embeddings)), dim=1).double().numpy()


def embedding_source(store: Store, modality: str, *, model: str | None, backbone: str | None) -> EmbeddingSource:
    """Embeddings from an L2 (``model``) or a registered L0/L1 (``backbone``), through the feature cache.

    A probe L2 shares its base's cached features; an L2 that changed its backbone (LoRA, partial,
    full) caches its own under a key from the L2's weights, so the two never mix.
    """
    from modelfab.tune.api import feature_getter

    if model and backbone:
        raise ConfigError("give --model (an L2) or --backbone (an L0/L1), not both")
    if model:
        from modelfab.tune.load import load_scenario

        sc = load_scenario(store, model)
        _check_modality(sc.backbone.input_spec.modality, modality, model)
        owner = sc.base_model if sc.config.method == "probe" else sc.model
        whole = sc.net.prior is not None  # its probabilities need the patch maps, not just the embeddings
        return EmbeddingSource(
            model,
            sc.model.id,
            feature_getter(store, sc.backbone, owner, modality),
            sc.net.head.eval(),
            list(sc.classes),
            (lambda rows: sc.predict_rows(store, rows, modality)) if whole else None,
        )
    if backbone:
        from modelfab.zoo.registry import load_registered

        bb, row = load_registered(store, backbone)
        _check_modality(bb.input_spec.modality, modality, backbone)
        return EmbeddingSource(backbone, row.id, feature_getter(store, bb, row, modality))
    raise ConfigError("give --model (an L2 whose backbone embeds the items) or --backbone (a registered L0/L1)")


def _check_modality(base: str, data: str, ref: str) -> None:
    if MODALITY_OF_BASE.get(base) != data:
        raise ConfigError(f"model {ref!r} is a {base} model but the dataset holds {data} items")
