"""Classification metrics from labels and predicted probabilities, as one typed, JSON-able result.

:func:`compute_metrics` is model-agnostic: it takes ``y_true`` (N,) class indices and ``probs``
(N, C) softmax probabilities. Undefined numbers (AUROC/AP when a class is absent) are ``None``
and the reason is added to :attr:`MetricsResult.notes`; they are never silently 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from modelfab.core.errors import ConfigError, DataError
from modelfab.evaluate.bootstrap import bootstrap_auroc_ci
from modelfab.evaluate.calibration import Calibration, calibration
from modelfab.evaluate.curves import (
    Curve,
    average_precision,
    pr_curve,
    recall_at_precision_oracle,
    roc_curve,
)
from modelfab.evaluate.inputs import Inputs, check_threshold, validate_inputs


@dataclass(frozen=True)
class ClassMetrics:
    """Per-class numbers. ``auroc``/``ap`` are one-vs-rest on that class's probability."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int
    auroc: float | None
    ap: float | None


@dataclass(frozen=True)
class OperatingPoint:
    """Binary counts and rates when predicting positive for ``score >= threshold``."""

    threshold: float
    precision: float
    recall: float
    f1: float
    fpr: float
    tp: int
    fp: int
    tn: int
    fn: int


@dataclass(frozen=True)
class RecallAtPrecision:
    """Recall at a target precision. ``achieved`` applies the given threshold (chosen on
    validation) to this data: the honest number. ``oracle_recall`` picks the threshold on this same
    data: optimistic, for reference only (``None`` when the target is unreachable)."""

    target_precision: float
    threshold: float
    achieved: OperatingPoint
    oracle_recall: float | None


@dataclass(frozen=True)
class MetricsResult:
    """Everything :func:`compute_metrics` measures. ``confusion[i][j]``: true ``i`` predicted ``j``."""

    task: Literal["binary", "multiclass"]
    class_names: tuple[str, ...]
    n_samples: int
    decision: str
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]
    auroc: float | None
    ap: float | None
    calibration: Calibration
    positive: str | None = None
    auroc_ci: tuple[float, float] | None = None
    roc: dict[str, Curve] = field(default_factory=dict)
    pr: dict[str, Curve] = field(default_factory=dict)
    operating_point: OperatingPoint | None = None
    recall_at_precision: tuple[RecallAtPrecision, ...] = ()
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, float | None]:
        """Flat headline numbers (the keys :mod:`modelfab.evaluate.compare` compares)."""
        out: dict[str, float | None] = {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "auroc": self.auroc,
            "ap": self.ap,
            "ece": self.calibration.ece,
            "brier": self.calibration.brier,
        }
        if self.operating_point is not None:
            op = self.operating_point
            out.update({"precision@thr": op.precision, "recall@thr": op.recall, "f1@thr": op.f1})
        for r in self.recall_at_precision:
            out[f"recall@p{r.target_precision:g}"] = r.achieved.recall
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``json.dumps`` works; non-finite floats become ``None``)."""
        d = asdict(self)
        d["roc"] = {k: v.to_dict() for k, v in self.roc.items()}
        d["pr"] = {k: v.to_dict() for k, v in self.pr.items()}
        d["calibration"] = self.calibration.to_dict()
        d["summary"] = self.summary()
        return _jsonable(d)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def _div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def operating_point(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> OperatingPoint:
    """Counts and rates for ``score >= threshold`` on binary 0/1 labels."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    p, r = _div(tp, tp + fp), _div(tp, tp + fn)
    return OperatingPoint(float(threshold), p, r, _div(2 * p * r, p + r), _div(fp, fp + tn), tp, fp, tn, fn)


_OvR = tuple[float | None, float | None, Curve | None, Curve | None]


def _one_vs_rest(inp: Inputs, k: int, notes: list[str]) -> _OvR:
    yk = (inp.y == k).astype(np.int64)
    sk = inp.probs[:, k]
    name = inp.class_names[k]
    try:
        roc = roc_curve(yk, sk)
    except DataError as e:
        notes.append(f"AUROC for {name!r}: {e}")
        roc = None
    try:
        pr = pr_curve(yk, sk)
    except DataError as e:
        notes.append(f"AP for {name!r}: {e}")
        pr = None
    auc = float(np.trapezoid(roc.y, roc.x)) if roc is not None else None
    ap = average_precision(yk, sk) if pr is not None else None
    return auc, ap, roc, pr


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    *,
    positive: str | int | None = None,
    threshold: float | None = None,
    precision_thresholds: Mapping[float, float] | None = None,
    n_bins: int = 15,
    bootstrap: int = 0,
    seed: int = 0,
) -> MetricsResult:
    """Measure a classifier from its probabilities.

    Predictions are the argmax, except for a binary task with ``threshold`` (the operating
    threshold chosen on validation), where positive means ``probs[:, positive] >= threshold``;
    accuracy, per-class precision/recall/F1 and the confusion matrix use those predictions.
    ``precision_thresholds`` maps target precisions to thresholds chosen on validation (see
    :func:`~modelfab.evaluate.curves.choose_threshold_for_precision`); each gives a
    :class:`RecallAtPrecision`. ``bootstrap`` > 0 adds a seeded 95% interval for the AUROC.
    Binary AUROC/AP are those of the positive class; multi-class AUROC/AP are one-vs-rest macro
    averages over the classes where they are defined.
    """
    inp = validate_inputs(y_true, probs, class_names, positive)
    check_threshold("threshold", threshold, inp.is_binary)
    for target, thr in (precision_thresholds or {}).items():
        if not 0 < float(target) <= 1:
            raise ConfigError(f"precision_thresholds: target precision must be in (0, 1], got {target}")
        check_threshold(f"precision_thresholds[{target}]", thr, inp.is_binary)
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}")
    c = len(inp.class_names)
    notes: list[str] = []
    if inp.positive is not None and threshold is not None:
        pred = np.where(inp.scores >= threshold, inp.positive, 1 - inp.positive)
        decision = f"{inp.class_names[inp.positive]} if p >= {threshold:.6g}"
    else:
        pred = inp.probs.argmax(axis=1)
        decision = "argmax"
    cm = confusion_matrix(inp.y, pred, c)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    per_class: list[ClassMetrics] = []
    curves_roc: dict[str, Curve] = {}
    curves_pr: dict[str, Curve] = {}
    ks = [inp.positive] if inp.positive is not None else list(range(c))
    ovr = {k: _one_vs_rest(inp, k, notes) for k in ks}
    for k in range(c):
        p, r = _div(tp[k], predicted[k]), _div(tp[k], support[k])
        if predicted[k] == 0:
            notes.append(f"no sample predicted as {inp.class_names[k]!r}: its precision is set to 0")
        auc, ap, roc, pr = ovr.get(k, (None, None, None, None))
        if roc is not None:
            curves_roc[inp.class_names[k]] = roc
        if pr is not None:
            curves_pr[inp.class_names[k]] = pr
        per_class.append(ClassMetrics(inp.class_names[k], p, r, _div(2 * p * r, p + r), int(support[k]), auc, ap))
    f1s = np.array([m.f1 for m in per_class])
    aucs = [ovr[k][0] for k in ks if ovr[k][0] is not None]
    aps = [ovr[k][1] for k in ks if ovr[k][1] is not None]
    auroc = float(np.mean(aucs)) if aucs else None  # type: ignore[arg-type]
    ap = float(np.mean(aps)) if aps else None  # type: ignore[arg-type]
    rap: list[RecallAtPrecision] = []
    if inp.positive is not None:
        yb = (inp.y == inp.positive).astype(np.int64)
        for target, thr in sorted((precision_thresholds or {}).items()):
            oracle = recall_at_precision_oracle(yb, inp.scores, target) if yb.any() else None
            rap.append(RecallAtPrecision(float(target), float(thr), operating_point(yb, inp.scores, thr), oracle))
    op = None
    if inp.positive is not None and threshold is not None:
        op = operating_point((inp.y == inp.positive).astype(np.int64), inp.scores, threshold)
    ci = bootstrap_auroc_ci(inp, bootstrap, seed) if bootstrap and auroc is not None else None
    if bootstrap and auroc is not None and ci is None:
        notes.append("bootstrap interval unavailable: too few resamples contain every class")
    return MetricsResult(
        task="binary" if inp.is_binary else "multiclass",
        class_names=inp.class_names,
        n_samples=int(inp.y.size),
        decision=decision,
        accuracy=float(tp.sum() / inp.y.size),
        macro_f1=float(f1s.mean()),
        weighted_f1=float(np.sum(f1s * support) / support.sum()),
        per_class=tuple(per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        auroc=auroc,
        ap=ap,
        calibration=calibration(inp.y, inp.probs, n_bins),
        positive=inp.class_names[inp.positive] if inp.positive is not None else None,
        auroc_ci=ci,
        roc=curves_roc,
        pr=curves_pr,
        operating_point=op,
        recall_at_precision=tuple(rap),
        notes=tuple(notes),
    )
