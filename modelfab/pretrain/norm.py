"""RMSNorm and the gains of Depth-Scaled Sandwich-Norm (DSSN, Pangu Ultra §2)."""

from __future__ import annotations

import math

import torch
from torch import nn


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``; with weight = g the output RMS is exactly |g| (up to eps)."""

    def __init__(self, dim: int, eps: float = 1e-6, init: float = 1.0) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(dtype)


def dssn_gain(c: float, n_layers: int) -> float:
    """Initial post-norm gain of a DSSN branch: ``c / sqrt(L)``."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return c / math.sqrt(n_layers)
