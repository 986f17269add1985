"""A screening threshold with a stated recall guarantee (one-sided Clopper-Pearson).

With ``n`` calibration defects of which ``k`` score at or above a threshold ``t``, the exact
one-sided lower confidence bound on the recall at level ``1 - alpha`` is

    L(k, n) = Beta.ppf(alpha; k, n - k + 1)        (L = 0 when k = 0)

:func:`calibrate_threshold` returns the highest ``t`` with ``L(k(t), n) >= target``: the fewest
items sent to humans whose defect recall is at least ``target`` with confidence ``1 - alpha``
(for new items exchangeable with the calibration defects).  Even with no miss, ``L(n, n) =
alpha ** (1 / n)``, so ``n >= ln(alpha) / ln(target)`` defects are needed: 59 for 0.95 and 299
for 0.99 at 95% confidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from modelfab.core.errors import ConfigError, DataError


def recall_lower_bound(detected: int, total: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound on a recall of ``detected / total``."""
    if total <= 0 or not 0 <= detected <= total:
        raise ConfigError(f"need 0 <= detected <= total and total > 0, got {detected}/{total}")
    if detected == 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, detected, total - detected + 1))


def defects_needed(target: float, confidence: float = 0.95) -> int:
    """Fewest calibration defects whose bound can reach ``target`` (with zero misses)."""
    check_levels(target, confidence)
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(target)))
    while recall_lower_bound(n, n, confidence) < target:  # guard the float edge
        n += 1
    return n


def check_levels(target: float, confidence: float) -> None:
    if not 0.0 < target < 1.0:
        raise ConfigError(f"target_recall: must be in (0, 1), got {target}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence: must be in (0, 1), got {confidence}")


@dataclass(frozen=True)
class Calibration:
    """The chosen threshold and what it guarantees on the calibration defects."""

    threshold: float  # items scoring >= threshold go to humans
    target_recall: float
    confidence: float
    defects: int
    detected: int
    recall_bound: float  # Clopper-Pearson lower bound at ``confidence``
    observed_recall: float
    normals: int
    normals_filtered: float  # fraction of calibration normals scoring below the threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_threshold(
    defect_scores: np.ndarray,
    target: float = 0.95,
    confidence: float = 0.95,
    normal_scores: np.ndarray | None = None,
) -> Calibration:
    """The highest threshold whose recall lower bound on ``defect_scores`` reaches ``target``."""
    check_levels(target, confidence)
    s = np.sort(np.asarray(defect_scores, dtype=np.float64))[::-1]  # descending
    n = len(s)
    if n == 0:
        raise DataError("the calibration set has no defects (positive labels): cannot set a recall threshold")
    need = defects_needed(target, confidence)
    if n < need:
        raise DataError(
            f"{n} calibration defects cannot show recall >= {target:g} at {confidence:.0%} confidence "
            f"even with no miss; {need} are needed"
        )
    if not np.all(np.isfinite(s)):
        raise DataError("calibration scores contain NaN or infinity")
    for k in range(1, n + 1):
        threshold = float(s[k - 1])
        detected = int((s >= threshold).sum())  # ties at the threshold are all sent to humans
        bound = recall_lower_bound(detected, n, confidence)
        if bound >= target:
            break
    normals = np.asarray(normal_scores if normal_scores is not None else [], dtype=np.float64)
    filtered = float((normals < threshold).mean()) if len(normals) else float("nan")
    return Calibration(threshold, target, confidence, n, detected, bound, detected / n, len(normals), filtered)
