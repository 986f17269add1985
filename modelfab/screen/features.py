"""Backbone features for scorers: patch maps (taps resized to the finest, averaged, joined) or
pooled embeddings, computed in batches under ``inference_mode``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from modelfab.core.devices import module_device, placed
from modelfab.core.errors import ConfigError, DataError
from modelfab.core.progress import track
from modelfab.screen.base import FeatureConfig
from modelfab.zoo.base import Backbone, evaluating


def join_maps(feats: dict[str, Tensor], layers: Sequence[str], smooth: int) -> Tensor:
    """Named maps -> (N, sum C, H, W) at the finest map's size.

    Each map is first averaged over a ``smooth`` x ``smooth`` neighbourhood at its own resolution
    (a patch then describes its surroundings, as in PatchCore), then bilinearly resized.
    """
    maps = [feats[name] for name in layers]
    for name, m in zip(layers, maps, strict=True):
        if m.ndim != 4:
            raise ConfigError(f"layers: {name!r} is not a spatial map (shape {tuple(m.shape)}); use embedding-knn")
    size = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    out = []
    for m in maps:
        if smooth > 1:
            m = F.avg_pool2d(m, smooth, stride=1, padding=smooth // 2, count_include_pad=False)
        if tuple(m.shape[-2:]) != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        out.append(m)
    return torch.cat(out, dim=1).float()  # (N, C, H, W)


def pool_features(feats: dict[str, Tensor], layers: Sequence[str]) -> Tensor:
    """Named maps or vectors -> (N, sum D): spatial maps are globally averaged."""
    parts = [feats[n].mean(dim=(2, 3)) if feats[n].ndim == 4 else feats[n] for n in layers]
    return torch.cat(parts, dim=1).float()  # (N, D)


def make_projection(channels: int, dim: int, seed: int) -> Tensor:
    """A seeded Gaussian random projection (channels, dim), scaled to keep distances on average."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(channels, dim, generator=gen) / math.sqrt(dim)


class FeatureExtractor:
    """Images -> features of ``cfg.layers`` for a scorer of ``kind`` ('patch' or 'embedding')."""

    def __init__(self, backbone: Backbone, cfg: FeatureConfig, kind: Literal["patch", "embedding"]) -> None:
        if backbone.input_spec.modality != "vision":
            raise ConfigError(f"screening needs a vision backbone; {backbone.name} is {backbone.input_spec.modality}")
        info: dict[str, Any] = dict(getattr(backbone, "feature_info", {}) or {})
        unknown = [n for n in cfg.layers if n not in info]
        if unknown:
            raise ConfigError(f"layers: unknown feature(s) {unknown} of {backbone.name}; known: {list(info)}")
        if kind == "patch" and any(info[n].get("stride", 0) == 0 for n in cfg.layers):
            raise ConfigError(f"layers: {cfg.layers} include a pooled vector; patch scorers need spatial maps")
        if cfg.image_size is not None and cfg.image_size != backbone.input_spec.image_size:
            backbone.input_spec = dataclasses.replace(backbone.input_spec, image_size=cfg.image_size)
        self.backbone = backbone
        self.cfg = cfg
        self.kind = kind
        self.image_size = int(backbone.input_spec.image_size or 224)

    def __call__(self, images: Sequence[Any]) -> Tensor:
        """One batch of images (arrays, paths, PIL) -> (N, C, H, W) maps or (N, D) embeddings, on the
        device the backbone is on."""
        if len(images) == 0:
            raise DataError("no images to score")
        with evaluating(self.backbone.module):  # eval mode for the call, the caller's mode afterwards
            batch = self.backbone.preprocess(list(images))  # (N, 3, S, S)
            feats = self.backbone.features(batch.to(module_device(self.backbone.module)), self.cfg.layers)
            if self.kind == "patch":
                return join_maps(feats, self.cfg.layers, self.cfg.smooth)
            return pool_features(feats, self.cfg.layers)

    def batches(
        self,
        images: Sequence[Any],
        batch_size: int = 16,
        description: str = "features",
        device: torch.device | None = None,
    ) -> Iterator[Tensor]:
        """Features of ``images`` batch by batch, with a progress line; with ``device``, the backbone
        runs there for the loop (and goes back afterwards), and so do the yielded tensors."""
        starts = range(0, len(images), batch_size)
        with placed(self.backbone.module, device or module_device(self.backbone.module)):
            for start in track(starts, len(starts), description):
                yield self(images[start : start + batch_size])
