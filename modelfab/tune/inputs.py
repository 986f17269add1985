"""Model-ready batches for tuning: images pre-resized once and augmented in torch, or texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from modelfab.adapt.augment import brightness_contrast, random_flip
from modelfab.zoo.base import Backbone

POLICIES = {"light": (0.5, 0.1, 0.1, 0.0), "strong": (0.5, 0.25, 0.25, 0.02)}  # flip p, brightness, contrast, noise


class InputBank:
    """All inputs of one split, ready to batch. Vision: (N, 3, S, S) normalised, built once."""

    def __init__(self, backbone: Backbone, raw: Sequence[Any], policy: str = "light", batch_size: int = 32) -> None:
        self.backbone = backbone
        self.policy = policy
        self.is_text = backbone.input_spec.modality != "vision"
        self.raw = list(raw)
        self.images: Tensor | None = None
        if not self.is_text and self.raw:
            # (N, 3, S, S)
            self.images = torch.cat(
                [backbone.preprocess(self.raw[i : i + batch_size]) for i in range(0, len(self.raw), batch_size)]
            )
            spec = backbone.input_spec
            self.mean = torch.tensor(spec.mean or (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
            self.std = torch.tensor(spec.std or (1.0, 1.0, 1.0)).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.raw)

    def batch(self, idx: Tensor, augment: bool = False, gen: torch.Generator | None = None) -> Any:
        if self.is_text:
            return self.backbone.preprocess([self.raw[int(i)] for i in idx])
        if self.images is None:
            raise RuntimeError("vision input bank without images")
        x = self.images[idx]
        if not augment or self.policy == "none" or gen is None:
            return x
        flip, bright, contrast, noise = POLICIES[self.policy]
        x01 = x * self.std + self.mean  # back to 0..1
        x01 = random_flip(x01, gen, flip)
        x01 = brightness_contrast(x01, gen, bright, contrast)
        if noise:
            x01 = x01 + noise * torch.randn(x01.shape, generator=gen)
        return (x01.clamp(0, 1) - self.mean) / self.std

    def batches(self, y: Tensor, size: int = 32) -> list[tuple[Any, Tensor]]:
        """The whole split in order, as (batch, labels) pairs."""
        out = []
        for start in range(0, len(self), size):
            idx = torch.arange(start, min(start + size, len(self)))
            out.append((self.batch(idx), y[idx]))
        return out
