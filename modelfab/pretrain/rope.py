"""Rotary position embedding (RoPE), computed from explicit positions.

Positions are passed in, not sliced from a table, so a KV-cached decode step and a shifted
sequence use exactly the same code path.
"""

from __future__ import annotations

import torch


def rope_angles(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (T, dim/2) for integer ``positions`` of shape (T,)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, dim/2)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of ``x`` (..., T, dim) pairwise (interleaved pairs (0,1), (2,3), ...)."""
    dtype = x.dtype
    x = x.float()
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, dim/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).to(dtype)


def positions(start: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer positions start .. start+length-1."""
    return torch.arange(start, start + length, device=device)
