"""The anomaly prior of an ``image-defect`` L2: what a normal item looks like, learned without labels.

A defect is what a normal item is not, and a plant has far more unlabeled items than labels. The prior
is a per-location Gaussian of the frozen base's patch features (the screening scorer
:mod:`modelfab.screen.gaussian`), fitted on the dataset version's unlabeled pool: every image of the
train split (and unsplit images), labels unused. Defects in the pool are handled by trimming: fit, drop
the most anomalous ``trim`` fraction, refit. At prediction the image's anomaly (largest per-location
Mahalanobis distance) and the probe's logit margin are standardised by their validation statistics and
mixed, ``s = w * z(margin) + (1 - w) * z(anomaly)``; the L2's two logits are ``(-s/2, s/2)`` so that
softmax gives ``sigmoid(s)`` for the defect class. ``trim`` and ``w`` are chosen on the validation split.

Everything runs inside the L2's ``forward`` (one backbone pass for head and prior), so evaluation,
export to ONNX and serving need nothing special.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modelfab.core.errors import ConfigError, DataError
from modelfab.screen.base import FeatureConfig
from modelfab.screen.features import FeatureExtractor, join_maps, make_projection
from modelfab.screen.gaussian import GaussianConfig, GaussianScorer, mahalanobis
from modelfab.store.datasets import ItemRow
from modelfab.tune.data import seeded_draw
from modelfab.zoo.base import Backbone

TRIM_GRID = (0.0, 0.1, 0.2, 0.35, 0.5)
WEIGHT_GRID = tuple(i / 10 for i in range(11))
MIN_POOL = 8


class AnomalyPrior(nn.Module):
    """Patch features -> anomaly score, and the fusion of that score with a probe's logits."""

    proj: Tensor
    mean: Tensor
    inv_cov: Tensor
    fusion: Tensor

    def __init__(
        self, layers: Sequence[str], smooth: int, positive: int, channels: int, dim: int, locations: int
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.smooth = smooth
        self.positive = positive
        self.register_buffer("proj", torch.zeros(channels, dim))
        self.register_buffer("mean", torch.zeros(locations, dim))
        self.register_buffer("inv_cov", torch.zeros(locations, dim, dim))
        # weight of the probe, then (mean, std) of the probe margin and of the anomaly on validation
        self.register_buffer("fusion", torch.tensor([0.5, 0.0, 1.0, 0.0, 1.0]))

    def anomaly(self, feats: dict[str, Tensor]) -> Tensor:
        """(N,) largest per-location Mahalanobis distance to the normal pool."""
        x = join_maps(feats, self.layers, self.smooth)  # (N, C, H, W)
        v = x.flatten(2).transpose(1, 2) @ self.proj  # (N, L, D)
        if v.shape[1] != self.mean.shape[0]:
            raise DataError(f"prior: {v.shape[1]} feature locations, fitted on {self.mean.shape[0]}: wrong input size")
        return mahalanobis(v, self.mean, self.inv_cov).amax(1)  # (N,)

    def fuse(self, margin: Tensor, anomaly: Tensor) -> Tensor:
        """(N,) probe margins and anomalies -> (N,) fused defect score ``s``."""
        w, mu_m, sd_m, mu_a, sd_a = self.fusion.unbind()
        return w * (margin - mu_m) / sd_m + (1 - w) * (anomaly - mu_a) / sd_a

    def logits(self, s: Tensor) -> Tensor:
        """(N,) fused scores -> (N, 2) logits whose softmax gives ``sigmoid(s)`` to the defect class."""
        half = s / 2
        return torch.stack([half, -half] if self.positive == 0 else [-half, half], dim=1)

    def forward(self, logits: Tensor, feats: dict[str, Tensor]) -> Tensor:  # (N, 2) -> (N, 2)
        neg = 1 - self.positive
        return self.logits(self.fuse(logits[:, self.positive] - logits[:, neg], self.anomaly(feats)))


@dataclass
class PriorFit:
    """A fitted prior and what the model card records about it."""

    prior: AnomalyPrior
    info: dict[str, Any]
    val_logits: Tensor  # (V, 2) the fused logits of the validation images


def pool_rows(rows: Sequence[ItemRow], limit: int, seed: int) -> list[ItemRow]:
    """The unlabeled pool: train-split and unsplit items (labels unused), at most ``limit`` (seeded)."""
    return seeded_draw([r for r in rows if r.split in ("train", None)], limit, seed, "prior")


def check_layers(backbone: Backbone, layers: Sequence[str]) -> None:
    info = getattr(backbone, "feature_info", None) or {}
    if backbone.input_spec.modality != "vision" or not info:
        raise ConfigError(f"prior: needs a vision base with feature maps; {backbone.name} has none")
    bad = [n for n in layers if n not in info or info[n].get("stride", 0) == 0]
    if bad:
        spatial = [n for n, i in info.items() if i.get("stride", 0) > 0]
        raise ConfigError(f"prior_layers: {bad} are not spatial maps of {backbone.name}; choose from {spatial}")


# Patch vectors already computed inside a reuse_patch_vectors() block: memo key -> ((N, L, D), grid)
_REUSE: ContextVar[dict[str, tuple[Tensor, tuple[int, int]]] | None] = ContextVar("prior_patch_vectors", default=None)


@contextlib.contextmanager
def reuse_patch_vectors() -> Iterator[None]:
    """Within the block, :func:`fit_prior` computes the patch vectors of one (base, prior settings,
    images) once and reuses them: a ``--auto`` search fits the same prior in every trial of a prior
    recipe, and the pool pass is most of a fit. The vectors are dropped when the block ends."""
    token = _REUSE.set({})
    try:
        yield
    finally:
        _REUSE.reset(token)


def vectors_key(base_key: str, layers: Sequence[str], dim: int, seed: int, content_hashes: Sequence[str]) -> str:
    """Memo key of the patch vectors of the items ``content_hashes`` (in order) under a frozen base
    (``base_key``: weights, builder and input spec, :func:`modelfab.tune.cache.cache_key`) and a prior's
    layers, projection size and projection seed."""
    h = hashlib.sha256(f"{base_key}|{','.join(layers)}|{dim}|{seed}|".encode())
    for c in content_hashes:
        h.update(c.encode())
    return h.hexdigest()


def _vectors(
    backbone: Backbone, prior: AnomalyPrior, inputs: Sequence[Any], what: str, device: torch.device,
    key: str | None = None,
) -> tuple[Tensor, tuple[int, int]]:
    """(N, L, D) float16 projected patch vectors of raw inputs (on the CPU), computed on ``device``
    batch by batch (the screening feature extractor), and the (H, W) grid. With a ``key``, inside
    :func:`reuse_patch_vectors`, a second call with the same key returns the first result."""
    memo = _REUSE.get()
    if key is not None and memo is not None and key in memo:
        return memo[key]
    x, grid = _compute_vectors(backbone, prior, inputs, what, device)
    if key is not None and memo is not None:
        memo[key] = (x, grid)
    return x, grid


def _compute_vectors(
    backbone: Backbone, prior: AnomalyPrior, inputs: Sequence[Any], what: str, device: torch.device
) -> tuple[Tensor, tuple[int, int]]:
    extractor = FeatureExtractor(backbone, FeatureConfig(layers=list(prior.layers), smooth=prior.smooth), "patch")
    proj = prior.proj.to(device)  # (C, D)
    out = []
    grid = (0, 0)
    for x in extractor.batches(inputs, 16, f"prior: patch features of the {what}", device):  # (n, C, H, W)
        grid = (int(x.shape[2]), int(x.shape[3]))
        out.append((x.flatten(2).transpose(1, 2) @ proj).half().cpu())  # (n, L, D)
    return torch.cat(out), grid


def _gaussian(vectors: Tensor, shrinkage: float, grid: tuple[int, int]) -> GaussianScorer:
    g = GaussianScorer(GaussianConfig(layers=["prior"], proj_dim=None, shrinkage=shrinkage))
    n, _, d = vectors.shape

    def maps() -> Any:
        for i in range(0, n, 64):
            v = vectors[i : i + 64].float()  # (b, L, D)
            yield v.transpose(1, 2).reshape(len(v), d, *grid)

    g.fit(maps())
    return g


def _scores(g: GaussianScorer, vectors: Tensor) -> Tensor:
    return torch.cat([mahalanobis(vectors[i : i + 64].float(), g.mean, g.inv_cov).amax(1)  # type: ignore[arg-type]
                      for i in range(0, len(vectors), 64)])


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def fit_prior(
    backbone: Backbone,
    pool: Sequence[Any],
    val: Sequence[Any],
    val_margin: Tensor,
    val_positive: np.ndarray,
    *,
    positive: int,
    layers: Sequence[str],
    dim: int,
    shrinkage: float,
    trim: float | None,
    weight: float | None,
    seed: int,
    device: torch.device | None = None,
    keys: tuple[str, str] | None = None,
) -> PriorFit:
    """Fit the prior on the ``pool`` images; choose trim and weight on validation (see module docstring).

    ``val_margin``: (V,) the probe's logit margin for the positive class on the validation images;
    ``val_positive``: (V,) bool, which of them are defects; ``device``: where the backbone computes the
    patch features (the Gaussian is fitted on the CPU in float64 either way); ``keys``: memo keys
    (:func:`vectors_key`) of the pool's and the validation images' patch vectors, used inside
    :func:`reuse_patch_vectors`.
    """
    check_layers(backbone, layers)
    if len(val) == 0:
        raise DataError("prior: needs validation images to standardise and weigh the two scores")
    if len(pool) < MIN_POOL:
        raise DataError(f"prior: the unlabeled pool has {len(pool)} images; it needs at least {MIN_POOL}")
    info = backbone.feature_info  # type: ignore[attr-defined]
    channels = sum(int(info[n]["channels"]) for n in layers)
    dim = min(dim, channels)
    prior = AnomalyPrior(layers, 3, positive, channels, dim, locations=1)  # locations set after the fit
    prior.proj.copy_(make_projection(channels, dim, seed))
    where = device or torch.device("cpu")
    pool_key, val_key = keys if keys is not None else (None, None)
    x_pool, grid = _vectors(backbone, prior, pool, f"unlabeled pool ({len(pool)} images)", where, pool_key)  # (P, L, D)
    both = 0 < int(val_positive.sum()) < len(val_positive)  # AUROC needs both classes
    x_val, _ = _vectors(backbone, prior, val, "validation images", where, val_key)
    first = _gaussian(x_pool, shrinkage, grid)
    order = torch.argsort(_scores(first, x_pool))  # least anomalous first
    trims = TRIM_GRID if trim is None else (trim,)
    if not both:
        trims = (trim if trim is not None else 0.2,)
    best: tuple[float, float, GaussianScorer] | None = None
    for t in trims:
        keep = order[: max(MIN_POOL, round(len(order) * (1 - t)))]
        g = first if t == 0.0 else _gaussian(x_pool[keep.sort().values], shrinkage, grid)
        score = _auroc(val_positive, _scores(g, x_val).numpy()) if both else 0.0
        if best is None or score > best[0]:
            best = (score, t, g)
    assert best is not None
    val_auroc, chosen_trim, g = best
    assert g.mean is not None and g.inv_cov is not None
    prior.mean = g.mean.clone()  # (L, D)
    prior.inv_cov = g.inv_cov.clone()  # (L, D, D)
    w = 0.5 if weight is None else weight
    margin = val_margin.float()
    anomaly = _scores(g, x_val)
    spread = [float(margin.std()) if len(margin) > 1 else 1.0, float(anomaly.std()) if len(anomaly) > 1 else 1.0]
    stats = [float(margin.mean()), max(spread[0], 1e-6), float(anomaly.mean()), max(spread[1], 1e-6)]
    prior.fusion.copy_(torch.tensor([w, *stats]))
    if weight is None and both:

        def fused_auroc(c: float) -> float:
            prior.fusion[0] = c
            return _auroc(val_positive, prior.fuse(margin, anomaly).numpy())

        w = max(WEIGHT_GRID, key=fused_auroc)
    prior.fusion[0] = w
    card = {"layers": list(layers), "smooth": prior.smooth, "dim": dim, "locations": int(prior.mean.shape[0]),
            "pool_images": len(pool), "trim": chosen_trim, "shrinkage": shrinkage, "weight": float(w),
            "val_auroc_prior_alone": val_auroc if both else None,
            "fusion": [float(v) for v in prior.fusion], "state_bytes": int(sum(b.numel() * 4 for b in prior.buffers()))}
    with torch.no_grad():
        val_logits = prior.logits(prior.fuse(margin, anomaly))
    return PriorFit(prior, card, val_logits)
