"""Calibration: expected calibration error (ECE), reliability-diagram bins, Brier score.

Top-label calibration (Guo et al., 2017): the confidence of a sample is its highest class
probability, and it is correct when that class is the true one. Bins are equal-width on [0, 1];
bin ``b`` holds confidences in ``(b/B, (b+1)/B]`` and the first bin also holds 0.
``ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from modelfab.core.errors import ConfigError


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of the reliability diagram (``accuracy``/``confidence`` are ``None`` when empty)."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    """Calibration summary: ECE, maximum calibration error, Brier score and the bins."""

    ece: float
    mce: float
    brier: float
    n_bins: int
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "ece": self.ece,
            "mce": self.mce,
            "brier": self.brier,
            "n_bins": self.n_bins,
            "bins": [asdict(b) for b in self.bins],
        }


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> Calibration:
    """Top-label ECE/MCE over ``n_bins`` equal-width bins, plus the multi-class Brier score.

    ``y_true``: (N,) class indices; ``probs``: (N, C) rows summing to 1 (validated by the caller,
    see :func:`modelfab.evaluate.metrics.validate_inputs`). Brier = mean over samples of
    ``sum_c (p_c - 1[y = c])^2`` (0 is perfect, 2 the worst).
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)  # (N, C)
    conf = p.max(axis=1)  # (N,)
    correct = (p.argmax(axis=1) == y).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")  # (N,) in [0, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    bins: list[ReliabilityBin] = []
    ece = 0.0
    mce = 0.0
    for b in range(n_bins):
        n = int(counts[b])
        if n == 0:
            bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
            continue
        c, a = float(conf_sum[b] / n), float(acc_sum[b] / n)
        gap = abs(a - c)
        ece += n / y.size * gap
        mce = max(mce, gap)
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), n, c, a))
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    return Calibration(ece=float(ece), mce=float(mce), brier=brier, n_bins=n_bins, bins=tuple(bins))
