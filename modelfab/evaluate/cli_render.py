"""Rich tables for the ``modelfab evaluate`` command (the command itself lives in ``modelfab.cli``)."""

from __future__ import annotations

from rich.table import Table

from modelfab.evaluate.api import EvaluationResult
from modelfab.evaluate.metrics import MetricsResult


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _metrics(result: MetricsResult | EvaluationResult) -> MetricsResult:
    return result.metrics if isinstance(result, EvaluationResult) else result


def render_metrics_table(result: MetricsResult | EvaluationResult) -> Table:
    """Headline metrics (accuracy, macro F1, AUROC with CI, AP, ECE, operating points) as one table."""
    m = _metrics(result)
    t = Table(title=f"evaluation: {m.n_samples} samples, {m.task}, decision {m.decision}")
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    for key, value in m.summary().items():
        t.add_row(key, _f(value))
    if m.auroc_ci is not None:
        t.add_row("auroc 95% CI", f"{m.auroc_ci[0]:.4f} – {m.auroc_ci[1]:.4f}")
    if m.operating_point is not None:
        t.add_row("threshold", f"{m.operating_point.threshold:.6g}")
    for r in m.recall_at_precision:
        t.add_row(f"threshold for p{r.target_precision:g} (from validation)", f"{r.threshold:.6g}")
        t.add_row(f"recall@p{r.target_precision:g}, test-chosen threshold (optimistic)", _f(r.oracle_recall))
    return t


def render_per_class_table(result: MetricsResult | EvaluationResult) -> Table:
    """Per-class precision, recall, F1, support and one-vs-rest AUROC/AP."""
    m = _metrics(result)
    t = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support", "AUROC", "AP"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for c in m.per_class:
        t.add_row(c.name, _f(c.precision), _f(c.recall), _f(c.f1), str(c.support), _f(c.auroc), _f(c.ap))
    return t


def render_confusion_table(result: MetricsResult | EvaluationResult) -> Table:
    """Confusion matrix, rows true class, columns predicted class."""
    m = _metrics(result)
    t = Table(title="confusion matrix (rows: true, columns: predicted)")
    t.add_column("true \\ pred", style="bold")
    for name in m.class_names:
        t.add_column(name, justify="right")
    for name, row in zip(m.class_names, m.confusion, strict=True):
        t.add_row(name, *[str(v) for v in row])
    return t
