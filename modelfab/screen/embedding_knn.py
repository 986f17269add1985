"""``embedding-knn``: k nearest normal embeddings (global pooled features), the fast baseline.

Fit stores every normal image's pooled embedding (L2-normalised when ``normalize``); the score is
the mean distance to the ``k`` nearest of them (faiss ``IndexFlatL2``).  No anomaly map.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from modelfab.core import optional
from modelfab.core.errors import DataError
from modelfab.screen.base import SCORERS, FeatureConfig, Scores


class EmbeddingKnnConfig(FeatureConfig):
    """Global-embedding kNN: the pooled head features by default."""

    layers: list[str] = Field(default_factory=lambda: ["pooled"])
    """Features to pool (spatial maps are globally averaged) and join."""
    k: int = Field(default=5, ge=1)
    """Nearest normal embeddings averaged into the score."""
    normalize: bool = True
    """L2-normalise embeddings (cosine geometry)."""
    max_memory_mb: float = Field(default=1024.0, gt=0.0)
    """Budget of the stored embeddings (float32)."""


class EmbeddingKnnScorer:
    """See module docstring."""

    name = "embedding-knn"
    kind: Literal["patch", "embedding"] = "embedding"

    def __init__(self, cfg: EmbeddingKnnConfig) -> None:
        self.config: EmbeddingKnnConfig = cfg
        self.bank: Tensor | None = None  # (N, D)
        self.info: dict[str, object] = {}
        self._index: Any = None  # faiss.IndexFlatL2, built on first score

    def _prep(self, x: Tensor) -> Tensor:
        if x.ndim != 2:
            raise DataError(f"embedding-knn takes (N, D) embeddings, got {tuple(x.shape)}")
        x = x.float()
        return F.normalize(x, dim=1) if self.config.normalize else x

    def fit(self, batches: Iterable[Tensor]) -> None:
        parts, size = [], 0
        budget = self.config.max_memory_mb * 2**20
        for x in batches:
            parts.append(self._prep(x))
            size += parts[-1].numel() * 4
            if size > budget:
                raise DataError(f"max_memory_mb: {self.config.max_memory_mb:g} MB cannot hold the normal embeddings")
        if not parts:
            raise DataError("no normal images to fit")
        self.bank = torch.cat(parts).contiguous()
        self.info = {"images": len(self.bank), "dim": int(self.bank.shape[1]), "bank_bytes": size}
        self._index = None

    def score(self, features: Tensor) -> Scores:
        if self.bank is None:
            raise DataError("embedding-knn scorer is not fitted")
        if self._index is None:
            self._index = optional.faiss().IndexFlatL2(self.bank.shape[1])
            self._index.add(np.ascontiguousarray(self.bank.numpy()))
        k = min(self.config.k, len(self.bank))
        dist, _ = self._index.search(np.ascontiguousarray(self._prep(features).numpy()), k)
        return Scores(torch.from_numpy(np.sqrt(np.maximum(dist, 0.0))).mean(1))

    def state(self) -> dict[str, Tensor]:
        if self.bank is None:
            raise DataError("embedding-knn scorer is not fitted")
        return {"bank": self.bank}

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, object]) -> None:
        self.bank = tensors["bank"].float().contiguous()
        self.info = dict(meta)
        self._index = None

    def meta(self) -> dict[str, object]:
        return dict(self.info)


@SCORERS.register("embedding-knn", config=EmbeddingKnnConfig, summary="kNN on global pooled embeddings (baseline)")
def build_embedding_knn(cfg: FeatureConfig) -> EmbeddingKnnScorer:
    """Mean distance to the k nearest normal embeddings."""
    if isinstance(cfg, EmbeddingKnnConfig):
        return EmbeddingKnnScorer(cfg)
    return EmbeddingKnnScorer(EmbeddingKnnConfig.model_validate(cfg.model_dump()))
