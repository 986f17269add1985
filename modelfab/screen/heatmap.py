"""Anomaly heat-maps as PNG: the image with the patch-score map overlaid (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def upsample_map(amap: Tensor, height: int, width: int) -> np.ndarray:
    """(h, w) patch scores -> (height, width) bilinear map."""
    x = amap.float().view(1, 1, *amap.shape[-2:])
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def save_heatmap(
    image: np.ndarray, amap: Tensor, path: Path, *, score: float, threshold: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Write ``image`` (H, W, 3) uint8 with ``amap`` (h, w) overlaid to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    heat = upsample_map(amap, h, w)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(image)
    im = axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=vmax or float(heat.max()) or 1.0)
    verdict = "" if threshold is None else (" (to label)" if score >= threshold else " (normal)")
    axes[1].set_title(f"score {score:.3f}{verdict}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


