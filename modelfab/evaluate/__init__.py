"""Model-agnostic evaluation: metrics, plots, comparison and an HTML report from predicted probabilities.

Typical use (after running a model on a labelled split)::

    from modelfab.evaluate import choose_threshold_for_recall, evaluate_predictions
    thr = choose_threshold_for_recall(y_val, p_val[:, 1], 0.95)          # on validation
    res = evaluate_predictions(y_test, p_test, ["ok", "defect"], threshold=thr, out_dir="eval/")
"""

from modelfab.evaluate.api import EvaluationResult, evaluate_predictions
from modelfab.evaluate.calibration import Calibration, ReliabilityBin, calibration
from modelfab.evaluate.compare import Comparison, compare_metrics, headline
from modelfab.evaluate.curves import (
    Curve,
    auroc,
    average_precision,
    choose_threshold_for_precision,
    choose_threshold_for_recall,
    pr_curve,
    recall_at_precision_oracle,
    roc_curve,
)
from modelfab.evaluate.metrics import (
    ClassMetrics,
    MetricsResult,
    OperatingPoint,
    RecallAtPrecision,
    compute_metrics,
    confusion_matrix,
    operating_point,
)

__all__ = [
    "Calibration",
    "ClassMetrics",
    "Comparison",
    "Curve",
    "EvaluationResult",
    "MetricsResult",
    "OperatingPoint",
    "RecallAtPrecision",
    "ReliabilityBin",
    "auroc",
    "average_precision",
    "calibration",
    "choose_threshold_for_precision",
    "choose_threshold_for_recall",
    "compare_metrics",
    "compute_metrics",
    "confusion_matrix",
    "evaluate_predictions",
    "headline",
    "operating_point",
    "pr_curve",
    "recall_at_precision_oracle",
    "roc_curve",
]
