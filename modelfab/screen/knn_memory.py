"""``knn-memory``: PatchCore-like patch memory bank with nearest-neighbour distance (faiss).

Fit: every patch of every normal image (joined taps, see :mod:`modelfab.screen.features`) streams
into a :class:`~modelfab.screen.coreset.PatchBank` (greedy coreset per chunk, bounded bytes).
Score: each patch's L2 distance to its nearest bank patch (mean over ``k`` neighbours) is its
anomaly; the image score is the largest patch score, the map is the patch grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from modelfab.core import optional
from modelfab.core.errors import DataError
from modelfab.screen.base import SCORERS, FeatureConfig, Scores
from modelfab.screen.coreset import BYTES_PER_VALUE, PatchBank
from modelfab.screen.features import make_projection


class KnnMemoryConfig(FeatureConfig):
    """PatchCore-like scorer: layers default to Lite0's block4 (stride 8) + block10 (stride 16)."""

    coreset_ratio: float = Field(default=0.01, gt=0.0, le=1.0)
    """Fraction of each chunk of normal patches kept by greedy coreset (PatchCore: 1-10%)."""
    max_memory_mb: float = Field(default=1024.0, gt=0.0)
    """Byte budget of the patches held while fitting and of the stored bank (float32)."""
    chunk: int = Field(default=4096, ge=16)
    """Patches reduced together by one greedy coreset call (smaller: faster, more local)."""
    k: int = Field(default=1, ge=1)
    """Nearest bank patches averaged into a patch score."""


def flatten_patches(maps: Tensor) -> Tensor:
    """(N, C, H, W) -> (N * H * W, C), image-major."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


class KnnMemoryScorer:
    """See module docstring."""

    name = "knn-memory"
    kind: Literal["patch", "embedding"] = "patch"

    def __init__(self, cfg: KnnMemoryConfig) -> None:
        self.config: KnnMemoryConfig = cfg
        self.bank: Tensor | None = None  # (K, D)
        self.proj: Tensor | None = None  # (C, D) when proj_dim is set
        self.info: dict[str, object] = {}
        self._index: Any = None  # faiss.IndexFlatL2, built on first score

    def _project(self, patches: Tensor) -> Tensor:
        return patches @ self.proj if self.proj is not None else patches

    def fit(self, batches: Iterable[Tensor]) -> None:
        cfg = self.config
        bank: PatchBank | None = None
        images = 0
        for maps in batches:  # (N, C, H, W)
            if self.proj is None and cfg.proj_dim is not None and cfg.proj_dim < maps.shape[1]:
                self.proj = make_projection(maps.shape[1], cfg.proj_dim, cfg.seed)
            patches = self._project(flatten_patches(maps.float()))  # (N*H*W, D)
            if bank is None:
                bank = PatchBank(
                    patches.shape[1], int(cfg.max_memory_mb * 2**20), cfg.coreset_ratio, cfg.chunk,
                    maps.shape[2] * maps.shape[3], cfg.seed,
                )
            bank.add(patches)
            images += len(maps)
        if bank is None:
            raise DataError("no normal images to fit")
        self.bank = bank.finish().contiguous()
        self.info = {
            "images": images, "patches_seen": bank.seen, "bank_patches": len(self.bank),
            "dim": int(self.bank.shape[1]), "bank_bytes": int(self.bank.numel() * BYTES_PER_VALUE),
            "peak_bytes": bank.peak_bytes,
        }
        self._index = None

    def _search(self, queries: Tensor) -> Tensor:
        if self.bank is None:
            raise DataError("knn-memory scorer is not fitted")
        if self._index is None:
            self._index = optional.faiss().IndexFlatL2(self.bank.shape[1])
            self._index.add(np.ascontiguousarray(self.bank.numpy(), dtype=np.float32))
        k = min(self.config.k, len(self.bank))
        dist, _ = self._index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
        return torch.from_numpy(np.sqrt(np.maximum(dist, 0.0))).mean(1)  # (Q,)

    def score(self, features: Tensor) -> Scores:
        n, _, h, w = features.shape  # (N, C, H, W)
        patch = self._search(self._project(flatten_patches(features.float()))).view(n, h, w)
        return Scores(patch.flatten(1).max(1).values, patch)

    def state(self) -> dict[str, Tensor]:
        if self.bank is None:
            raise DataError("knn-memory scorer is not fitted")
        out = {"bank": self.bank}
        if self.proj is not None:
            out["proj"] = self.proj
        return out

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, object]) -> None:
        self.bank = tensors["bank"].float().contiguous()
        self.proj = tensors.get("proj")
        self.info = dict(meta)
        self._index = None

    def meta(self) -> dict[str, object]:
        return dict(self.info)


@SCORERS.register("knn-memory", config=KnnMemoryConfig, summary="PatchCore-like patch kNN, greedy coreset, faiss")
def build_knn_memory(cfg: FeatureConfig) -> KnnMemoryScorer:
    """Patch memory bank + nearest-neighbour distance; image score = max patch score."""
    if isinstance(cfg, KnnMemoryConfig):
        return KnnMemoryScorer(cfg)
    return KnnMemoryScorer(KnnMemoryConfig.model_validate(cfg.model_dump()))
