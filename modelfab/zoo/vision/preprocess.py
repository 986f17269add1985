"""Image preprocessing written in torch: load, grayscale -> 3 channels, resize, normalise.

Accepted items: file paths, PIL images, numpy arrays (H, W) or (H, W, C), torch tensors (H, W),
(C, H, W) or a whole (N, C, H, W) batch.  Pixel values are on the 0..255 scale (uint8 or float).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modelfab.core.errors import DataError


def to_chw(item: Any) -> Tensor:
    """One image -> float (C, H, W) tensor with values 0..255 and C in {1, 3}."""
    if isinstance(item, str | Path):
        from PIL import Image

        try:
            with Image.open(item) as img:
                item = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {item}: {exc}") from exc
    if not isinstance(item, Tensor | np.ndarray):
        try:  # PIL image
            mode = item.mode
            item = np.asarray(item.convert("RGB") if mode not in ("L", "RGB") else item)
        except AttributeError:
            raise DataError(f"not an image: {type(item).__name__}") from None
    if isinstance(item, np.ndarray):
        arr = torch.from_numpy(np.array(item))  # a writable copy
        if arr.ndim == 3:
            arr = arr.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    else:
        arr = item
    if arr.ndim == 2:
        arr = arr.unsqueeze(0)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise DataError(f"image must be (H, W), (H, W, C) or (C, H, W) with 1/3 channels; got {tuple(arr.shape)}")
    return arr[:3].float()


def stack_images(items: Sequence[Any] | Tensor) -> list[Tensor]:
    """A batch tensor or a sequence of images -> list of (C, H, W) float tensors."""
    if isinstance(items, Tensor) and items.ndim == 4:
        return [img.float() for img in items]
    if len(items) == 0:
        raise DataError("empty image batch")
    return [to_chw(item) for item in items]


def preprocess_images(
    items: Sequence[Any] | Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Images -> (N, 3, size, size) float32: grayscale repeated, resized (bilinear, antialiased),
    scaled to 0..1 and normalised per channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    out: list[Tensor] = []
    for img in stack_images(items):
        x = img.unsqueeze(0)  # (1, C, H, W), C in {1, 3}
        if tuple(x.shape[-2:]) != (size, size):
            # channels resize independently: a grayscale plane is resized once, then repeated
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.expand(1, 3, -1, -1))
    batch = torch.cat(out) / 255.0  # (N, 3, S, S)
    return (batch - mean_t) / std_t
