"""Seeded percentile-bootstrap confidence interval of the AUROC (binary, or one-vs-rest macro)."""

from __future__ import annotations

import numpy as np

from modelfab.evaluate.curves import binary_counts
from modelfab.evaluate.inputs import Inputs


def _fast_auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    tps, fps, _ = binary_counts(y, s)
    if tps[-1] == 0 or fps[-1] == 0:
        return None
    return float(np.trapezoid(np.r_[0, tps] / tps[-1], np.r_[0, fps] / fps[-1]))


def _auroc_of(inp: Inputs, idx: np.ndarray) -> float | None:
    y, p = inp.y[idx], inp.probs[idx]
    if inp.positive is not None:
        return _fast_auroc((y == inp.positive).astype(np.int64), p[:, inp.positive])
    vals = [_fast_auroc((y == k).astype(np.int64), p[:, k]) for k in range(p.shape[1])]
    defined = [v for v in vals if v is not None]
    return float(np.mean(defined)) if defined else None


def bootstrap_auroc_ci(inp: Inputs, n_resamples: int, seed: int, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the (macro) AUROC; resamples that lose a class are
    skipped. ``None`` when fewer than 10 valid resamples exist. Seeded, so reproducible."""
    rng = np.random.default_rng(seed)
    n = inp.y.size
    need = np.unique(inp.y).size
    vals: list[float] = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        if np.unique(inp.y[idx]).size < need:
            continue
        v = _auroc_of(inp, idx)
        if v is not None:
            vals.append(v)
    if len(vals) < 10:
        return None
    lo, hi = np.percentile(vals, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)
