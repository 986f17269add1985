"""``gaussian``: PaDiM-like per-location multivariate Gaussian with Mahalanobis distance.

Fit: at every grid location the mean and covariance of the normal images' patch vectors
(accumulated in float64, streaming), shrunk towards a scaled identity,
``S = (1 - a) * C + a * tr(C) / D * I + eps * I``, then inverted.  Score: the Mahalanobis
distance ``sqrt((x - mu)^T S^-1 (x - mu))`` per location; image score = the largest.
Works best when images are aligned (solar cells, parts in a fixture), as the statistics are
per location.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from modelfab.core.errors import DataError
from modelfab.screen.base import SCORERS, FeatureConfig, Scores
from modelfab.screen.features import make_projection


def mahalanobis(vectors: Tensor, mean: Tensor, inv_cov: Tensor) -> Tensor:
    """Per-location Mahalanobis distance: (N, L, D) vectors, (L, D) means, (L, D, D) inverses -> (N, L).

    Two plain einsums (no three-operand form), so the same code exports to ONNX.
    """
    d = vectors - mean  # (N, L, D)
    t = torch.einsum("nld,lde->nle", d, inv_cov)  # (N, L, D)
    return (t * d).sum(-1).clamp_min(0).sqrt()  # (N, L)


class GaussianConfig(FeatureConfig):
    """PaDiM-like scorer: block4 + block10 projected to 100 dims by default."""

    proj_dim: int | None = Field(default=100, ge=1)
    """Seeded random projection of the joined channels (PaDiM keeps 100 random channels)."""
    shrinkage: float = Field(default=0.1, ge=0.0, le=1.0)
    """Weight ``a`` of the scaled identity in the shrunk covariance."""
    eps: float = Field(default=0.01, ge=0.0)
    """Ridge added to the covariance diagonal."""
    max_memory_mb: float = Field(default=1024.0, gt=0.0)
    """Budget for the float64 covariance accumulators (locations x dims^2 x 8 bytes)."""


class GaussianScorer:
    """See module docstring."""

    name = "gaussian"
    kind: Literal["patch", "embedding"] = "patch"

    def __init__(self, cfg: GaussianConfig) -> None:
        self.config: GaussianConfig = cfg
        self.mean: Tensor | None = None  # (L, D)
        self.inv_cov: Tensor | None = None  # (L, D, D)
        self.proj: Tensor | None = None  # (C, D)
        self.grid: tuple[int, int] = (0, 0)
        self.info: dict[str, object] = {}

    def _vectors(self, maps: Tensor) -> Tensor:
        x = maps.float().flatten(2).transpose(1, 2)  # (N, L, C)
        return x @ self.proj if self.proj is not None else x  # (N, L, D)

    def fit(self, batches: Iterable[Tensor]) -> None:
        cfg = self.config
        total: Tensor | None = None
        outer: Tensor | None = None
        n = 0
        for maps in batches:  # (N, C, H, W)
            if total is None:
                if cfg.proj_dim is not None and cfg.proj_dim < maps.shape[1]:
                    self.proj = make_projection(maps.shape[1], cfg.proj_dim, cfg.seed)
                self.grid = (int(maps.shape[2]), int(maps.shape[3]))
                locs, dim = self.grid[0] * self.grid[1], cfg.proj_dim or maps.shape[1]
                dim = min(dim, maps.shape[1])
                need = locs * dim * dim * 8 * 2
                if need > cfg.max_memory_mb * 2**20:
                    raise DataError(
                        f"max_memory_mb: {cfg.max_memory_mb:g} MB is too small for {locs} locations x {dim}^2 "
                        f"covariances ({need / 2**20:.1f} MB); raise it, lower proj_dim or image_size"
                    )
                total = torch.zeros(locs, dim, dtype=torch.float64)
                outer = torch.zeros(locs, dim, dim, dtype=torch.float64)
            if tuple(maps.shape[2:]) != self.grid:
                raise DataError(f"feature grid {tuple(maps.shape[2:])} differs from {self.grid}: one image size only")
            x = self._vectors(maps).double()  # (N, L, D)
            if outer is None:
                raise DataError("gaussian scorer: covariance accumulator missing")
            total += x.sum(0)
            outer += torch.einsum("nld,nle->lde", x, x)
            n += len(maps)
        if total is None or outer is None or n < 2:
            raise DataError(f"gaussian scorer needs at least 2 normal images, got {n}")
        mean = total / n  # (L, D)
        cov = (outer - n * torch.einsum("ld,le->lde", mean, mean)) / (n - 1)  # (L, D, D)
        dim = cov.shape[-1]
        eye = torch.eye(dim, dtype=torch.float64)
        scale = torch.diagonal(cov, dim1=1, dim2=2).sum(-1).div(dim).view(-1, 1, 1)  # (L, 1, 1)
        shrunk = (1 - cfg.shrinkage) * cov + cfg.shrinkage * scale * eye + cfg.eps * eye
        self.mean = mean.float()
        self.inv_cov = torch.linalg.inv(shrunk).float()
        self.info = {"images": n, "locations": int(cov.shape[0]), "dim": dim,
                     "state_bytes": int((self.mean.numel() + self.inv_cov.numel()) * 4)}

    def score(self, features: Tensor) -> Scores:
        if self.mean is None or self.inv_cov is None:
            raise DataError("gaussian scorer is not fitted")
        if tuple(features.shape[2:]) != self.grid:
            raise DataError(f"feature grid {tuple(features.shape[2:])} differs from the fitted {self.grid}")
        m = mahalanobis(self._vectors(features), self.mean, self.inv_cov)  # (N, L)
        maps = m.view(len(features), *self.grid)
        return Scores(m.max(1).values, maps)

    def state(self) -> dict[str, Tensor]:
        if self.mean is None or self.inv_cov is None:
            raise DataError("gaussian scorer is not fitted")
        out = {"mean": self.mean, "inv_cov": self.inv_cov, "grid": torch.tensor(self.grid)}
        if self.proj is not None:
            out["proj"] = self.proj
        return out

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, object]) -> None:
        self.mean, self.inv_cov = tensors["mean"].float(), tensors["inv_cov"].float()
        self.grid = (int(tensors["grid"][0]), int(tensors["grid"][1]))
        self.proj = tensors.get("proj")
        self.info = dict(meta)

    def meta(self) -> dict[str, object]:
        return dict(self.info)


@SCORERS.register("gaussian", config=GaussianConfig, summary="PaDiM-like per-location Gaussian, Mahalanobis")
def build_gaussian(cfg: FeatureConfig) -> GaussianScorer:
    """Per-location Gaussian of normal patch features; image score = max Mahalanobis distance."""
    return GaussianScorer(cfg if isinstance(cfg, GaussianConfig) else GaussianConfig.model_validate(cfg.model_dump()))
