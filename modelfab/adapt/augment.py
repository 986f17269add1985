"""Image augmentations for self-supervised views, written in torch (no torchvision).

All functions take a float batch (N, 3, H, W) on the 0..1 scale and a ``torch.Generator`` so a
run is reproducible and a resumed run draws the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    """View-generation policy (SimCLR-like, tuned down for grayscale industrial images)."""

    crop_scale: tuple[float, float] = (0.35, 1.0)
    """Area fraction range of the random resized crop."""
    crop_ratio: tuple[float, float] = (0.75, 1.333)
    """Aspect-ratio range of the crop."""
    flip_p: float = 0.5
    """Probability of a horizontal flip, and separately of a vertical flip."""
    brightness: float = 0.3
    """Max relative brightness change."""
    contrast: float = 0.3
    """Max relative contrast change."""
    blur_p: float = 0.3
    """Probability of a 5x5 Gaussian blur."""
    noise_std: float = 0.02
    """Std of additive Gaussian noise (0..1 scale)."""


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def random_resized_crop(x: Tensor, size: int, gen: torch.Generator, scale: tuple[float, float],
                        ratio: tuple[float, float]) -> Tensor:
    """Per-sample random crop (area fraction in ``scale``), resized to (size, size) via an affine grid."""
    n = x.shape[0]
    area = _uniform(gen, n, *scale)
    log_r = _uniform(gen, n, torch.log(torch.tensor(ratio[0])).item(), torch.log(torch.tensor(ratio[1])).item())
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)  # centre in [-1, 1] keeping the crop inside
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_flip(x: Tensor, gen: torch.Generator, p: float) -> Tensor:
    n = x.shape[0]
    h = torch.rand(n, generator=gen) < p
    v = torch.rand(n, generator=gen) < p
    x = torch.where(h.view(n, 1, 1, 1), x.flip(-1), x)
    return torch.where(v.view(n, 1, 1, 1), x.flip(-2), x)


def brightness_contrast(x: Tensor, gen: torch.Generator, brightness: float, contrast: float) -> Tensor:
    n = x.shape[0]
    b = _uniform(gen, n, 1 - brightness, 1 + brightness).view(n, 1, 1, 1)
    c = _uniform(gen, n, 1 - contrast, 1 + contrast).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean) * b


def gaussian_blur(x: Tensor, gen: torch.Generator, p: float, sigma: tuple[float, float] = (0.3, 1.5)) -> Tensor:
    n, c = x.shape[:2]
    apply = torch.rand(n, generator=gen) < p
    if not apply.any():
        return x
    s = _uniform(gen, n, *sigma)
    coords = torch.arange(5, dtype=torch.float32) - 2
    kern = torch.exp(-(coords.view(1, 5) ** 2) / (2 * s.view(n, 1) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # (N, 5)
    # separable blur, one kernel per sample: fold the batch into channels
    xb = x.reshape(1, n * c, *x.shape[-2:])
    kx = kern.repeat_interleave(c, 0).view(n * c, 1, 1, 5)
    ky = kern.repeat_interleave(c, 0).view(n * c, 1, 5, 1)
    xb = F.conv2d(F.pad(xb, (2, 2, 0, 0), mode="reflect"), kx, groups=n * c)
    xb = F.conv2d(F.pad(xb, (0, 0, 2, 2), mode="reflect"), ky, groups=n * c)
    return torch.where(apply.view(n, 1, 1, 1), xb.view_as(x), x)


def make_view(x: Tensor, size: int, gen: torch.Generator, cfg: AugmentConfig) -> Tensor:
    """One augmented view of a (N, 3, H, W) 0..1 batch -> (N, 3, size, size), clamped to 0..1."""
    v = random_resized_crop(x, size, gen, cfg.crop_scale, cfg.crop_ratio)
    v = random_flip(v, gen, cfg.flip_p)
    v = brightness_contrast(v, gen, cfg.brightness, cfg.contrast)
    v = gaussian_blur(v, gen, cfg.blur_p)
    if cfg.noise_std > 0:
        v = v + torch.randn(v.shape, generator=gen) * cfg.noise_std
    return v.clamp(0.0, 1.0)
