"""Binary ranking curves (ROC, precision-recall), AUROC, AP and threshold selection.

Pure numpy; the numbers equal scikit-learn's ``roc_curve``, ``roc_auc_score``,
``precision_recall_curve`` and ``average_precision_score`` (the tests check it).

Conventions used throughout :mod:`modelfab.evaluate`:

* a sample is predicted positive when ``score >= threshold``;
* equal scores are never split: every threshold is one of the observed scores, so all samples
  with the same score fall on the same side of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modelfab.core.errors import ConfigError, DataError

# Tolerance when comparing an achieved rate with a target (0.9 * 10 is 9.000000000000002 in floats).
_EPS = 1e-9


@dataclass(frozen=True)
class Curve:
    """One curve: ``x`` and ``y`` points and the score threshold of each point.

    ROC: ``x`` = false-positive rate, ``y`` = true-positive rate, thresholds decreasing and the
    first one ``+inf`` (the point (0, 0)). PR: ``x`` = recall (decreasing), ``y`` = precision, one
    threshold fewer than points (the final point recall 0 / precision 1 has none), as scikit-learn.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    thresholds: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float | None]]:
        """JSON-friendly form; non-finite thresholds (the ROC's ``+inf``) become ``None``."""
        return {"x": list(self.x), "y": list(self.y), "thresholds": [_finite_or_none(t) for t in self.thresholds]}

    @classmethod
    def from_dict(cls, data: dict[str, list[float | None]]) -> Curve:
        """Inverse of :meth:`to_dict` (``None`` thresholds come back as ``+inf``)."""
        return cls(
            x=tuple(float(v) for v in data["x"] if v is not None),
            y=tuple(float(v) for v in data["y"] if v is not None),
            thresholds=tuple(math.inf if t is None else float(t) for t in data["thresholds"]),
        )


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _binary_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise DataError(f"y_true and scores must be 1-D of equal length, got shapes {y.shape} and {s.shape}")
    if y.size == 0:
        raise DataError("no samples to evaluate")
    if not np.all(np.isfinite(s)):
        raise DataError(f"scores contain {int(np.sum(~np.isfinite(s)))} NaN/inf value(s)")
    uniq = np.unique(y)
    if not np.all(np.isin(uniq, [0, 1])):
        raise DataError(f"binary labels must be 0/1 (or bool), got values {uniq[:10].tolist()}")
    return y.astype(np.int64), s


def binary_counts(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score, scores sorted decreasing.

    Returns ``(tps, fps, thresholds)``: predicting ``score >= thresholds[i]`` gives ``tps[i]`` true
    positives and ``fps[i]`` false positives. Mirrors scikit-learn's ``_binary_clf_curve``.
    """
    y, s = _binary_inputs(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = 1 + last_of_run - tps
    return tps, fps, s[last_of_run]


def _need_both_classes(tps: np.ndarray, fps: np.ndarray, what: str) -> None:
    if tps[-1] == 0 or fps[-1] == 0:
        only = "negative" if tps[-1] == 0 else "positive"
        raise DataError(f"{what} is undefined: only {only} samples are present")


def roc_curve(y_true: np.ndarray, scores: np.ndarray, *, drop_intermediate: bool = True) -> Curve:
    """ROC curve (fpr, tpr); equals ``sklearn.metrics.roc_curve`` with the same flag.

    Raises :class:`DataError` when only one class is present (the curve is undefined).
    """
    tps, fps, thr = binary_counts(y_true, scores)
    _need_both_classes(tps, fps, "the ROC curve")
    if drop_intermediate and tps.size > 2:
        keep = np.nonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        tps, fps, thr = tps[keep], fps[keep], thr[keep]
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    thr = np.r_[np.inf, thr]
    return Curve(tuple((fps / fps[-1]).tolist()), tuple((tps / tps[-1]).tolist()), tuple(thr.tolist()))


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal; ties count one half), as ``roc_auc_score``.

    Raises :class:`DataError` when only one class is present.
    """
    c = roc_curve(y_true, scores, drop_intermediate=True)
    return float(np.trapezoid(c.y, c.x))


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> Curve:
    """Precision-recall curve; equals ``sklearn.metrics.precision_recall_curve``.

    Raises :class:`DataError` when there is no positive sample (recall is undefined).
    """
    tps, fps, thr = binary_counts(y_true, scores)
    if tps[-1] == 0:
        raise DataError("the precision-recall curve is undefined: no positive samples are present")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return Curve(
        tuple(np.r_[recall[::-1], 0.0].tolist()),
        tuple(np.r_[precision[::-1], 1.0].tolist()),
        tuple(thr[::-1].tolist()),
    )


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (step-wise, no interpolation), as ``average_precision_score``."""
    c = pr_curve(y_true, scores)
    recall, precision = np.asarray(c.x), np.asarray(c.y)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def _check_target(name: str, value: float) -> None:
    if not (0.0 < value <= 1.0):
        raise ConfigError(f"{name} must be in (0, 1], got {value}")


def choose_threshold_for_recall(y_true: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """The highest threshold whose recall on these samples is at least ``target_recall``.

    Use it on the validation split. Guarantees ``recall(score >= t) >= target_recall`` on the given
    samples. The result is one of the given scores; tied scores are never split, so with ties the
    achieved recall may exceed the target. Among the thresholds reaching the target, the highest
    one predicts the fewest positives and therefore has the fewest false positives. Deterministic.
    Raises :class:`DataError` when there is no positive sample.
    """
    _check_target("target_recall", target_recall)
    tps, _fps, thr = binary_counts(y_true, scores)
    if tps[-1] == 0:
        raise DataError("cannot choose a threshold for recall: no positive samples are present")
    ok = tps + _EPS * tps[-1] >= target_recall * tps[-1]
    return float(thr[int(np.argmax(ok))])  # first True: tps is non-decreasing, the last index always qualifies


def choose_threshold_for_precision(
    y_true: np.ndarray, scores: np.ndarray, target_precision: float, *, strict: bool = True
) -> float:
    """The threshold with the highest recall among those whose precision is at least the target.

    Use it on the validation split. Guarantees ``precision(score >= t) >= target_precision`` on the
    given samples. Among thresholds with equal (maximal) recall the highest is taken (fewest false
    positives, so the highest precision). The result is one of the given scores (ties never split).
    When no threshold reaches the target: raises :class:`DataError` if ``strict``, else returns
    ``+inf`` (predict nothing positive; recall 0 wherever it is applied).
    """
    _check_target("target_precision", target_precision)
    tps, fps, thr = binary_counts(y_true, scores)
    if tps[-1] == 0:
        raise DataError("cannot choose a threshold for precision: no positive samples are present")
    n = tps + fps
    ok = (tps + _EPS * n >= target_precision * n) & (tps > 0)
    if not ok.any():
        if strict:
            best = float(np.max(tps / n))
            raise DataError(
                f"no threshold reaches precision {target_precision} on these {int(n[-1])} samples "
                f"(best {best:.3f}); pass strict=False to get +inf"
            )
        return math.inf
    best_tp = tps[ok].max()
    idx = int(np.argmax(ok & (tps == best_tp)))  # first such index = highest threshold
    return float(thr[idx])


def recall_at_precision_oracle(y_true: np.ndarray, scores: np.ndarray, target_precision: float) -> float | None:
    """Best recall with precision >= target, threshold chosen on these same samples (optimistic).

    ``None`` when no threshold reaches the target. Report it next to the honest number (threshold
    from validation), never instead of it.
    """
    t = choose_threshold_for_precision(y_true, scores, target_precision, strict=False)
    if math.isinf(t):
        return None
    y, s = _binary_inputs(y_true, scores)
    return float(np.sum((s >= t) & (y == 1)) / np.sum(y == 1))
