"""Uncertainty of class probabilities: higher = the model is less sure."""

from __future__ import annotations

from typing import Literal

import numpy as np

from modelfab.core.errors import ConfigError

Measure = Literal["entropy", "margin", "least-confidence"]


def uncertainty_scores(probs: np.ndarray, measure: Measure = "entropy") -> np.ndarray:
    """(N, C) probabilities -> (N,) uncertainty.

    ``entropy``: -sum p log p; ``margin``: 1 - (p_top1 - p_top2); ``least-confidence``: 1 - p_top1.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)  # (N, C)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ConfigError(f"probabilities must be (N, C) with C >= 2; got shape {p.shape}")
    if measure == "entropy":
        return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    top = np.sort(p, axis=1)[:, ::-1]  # (N, C) descending
    if measure == "margin":
        return 1.0 - (top[:, 0] - top[:, 1])
    if measure == "least-confidence":
        return 1.0 - top[:, 0]
    raise ConfigError(f"measure: unknown uncertainty measure {measure!r}; use entropy, margin, least-confidence")
