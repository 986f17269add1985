"""Task heads on top of an embedding: linear or a small MLP, with built-in standardisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TaskHead(nn.Module):
    """(N, D) embeddings -> (N, C) logits. ``mean``/``std`` buffers standardise the input."""

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int, n_classes: int, kind: str = "linear", hidden: int = 256) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if kind == "linear":
            self.net: nn.Module = nn.Linear(dim, n_classes)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, n_classes))
        else:
            raise ValueError(f"head: unknown kind {kind!r}; use linear or mlp")

    def set_standardisation(self, features: Tensor) -> None:
        """Fit mean/std on (N, D) training features."""
        std = features.std(0, unbiased=False)
        # Floor at the median: a dimension (nearly) constant on few training items must not be
        # blown up on new items (zero-variance ReLU channels are common in pooled CNN features).
        self.mean.copy_(features.mean(0))
        self.std.copy_(std.clamp_min(float(std.median()) + 1e-6))

    def forward(self, z: Tensor) -> Tensor:  # (N, D) -> (N, C)
        return self.net((z - self.mean) / self.std)
