"""Dataset meta-features recorded with every tune run (the strategy pool's similarity space)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from modelfab.tune.data import TaskData

NUMERIC_KEYS = ("log_classes", "log_labels_per_class", "imbalance", "log_image_side", "separability", "is_text")


def meta_features(data: TaskData, train_features: Tensor) -> dict[str, Any]:
    """Modality, classes, labels per class, imbalance, image size and embedding statistics."""
    y = data.split("train").y
    counts = torch.bincount(y, minlength=len(data.classes)).float()
    present = counts[counts > 0]
    rows = data.split("train").rows
    sides = [((r.width or 0) * (r.height or 0)) ** 0.5 for r in rows if r.width]
    z = torch.nn.functional.normalize(train_features.float(), dim=1)
    centroids = torch.stack([z[y == c].mean(0) for c in range(len(data.classes)) if (y == c).any()])
    within = torch.stack([z[y == c].std(0, unbiased=False).norm() for c in range(len(data.classes)) if (y == c).any()])
    between = torch.pdist(centroids).mean() if len(centroids) > 1 else torch.tensor(0.0)
    sep = float(between / within.mean().clamp_min(1e-6))
    side = sum(sides) / len(sides) if sides else 0.0
    return {
        "modality": data.modality,
        "classes": len(data.classes),
        "labels_per_class_min": int(present.min()),
        "labels_per_class_mean": float(present.mean()),
        "imbalance": float(present.max() / present.min()),
        "image_side": side,
        "embedding_norm": float(train_features.float().norm(dim=1).mean()),
        "separability": sep,
        # numeric vector used for similarity:
        "log_classes": float(torch.log(torch.tensor(float(len(data.classes))))),
        "log_labels_per_class": float(torch.log(present.mean())),
        "log_image_side": float(torch.log(torch.tensor(side + 1.0))),
        "is_text": 1.0 if data.modality == "text" else 0.0,
    }
