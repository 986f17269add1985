"""``evaluate_predictions``: metrics + PNG plots + JSON + one HTML report from a model's probabilities.

This is what ``modelfab evaluate MODEL --data DATASET@version[:split]`` calls once the model has
been run; it knows nothing about models, datasets or the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfab.evaluate.compare import Comparison, MetricsLike, compare_metrics
from modelfab.evaluate.curves import Curve
from modelfab.evaluate.metrics import MetricsResult, compute_metrics
from modelfab.evaluate.plots import (
    plot_confusion,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_roc_comparison,
    write_atomic,
)
from modelfab.evaluate.report import render_html, write_report


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics, the optional comparison, and the files written (name -> path; empty without out_dir)."""

    metrics: MetricsResult
    comparison: Comparison | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what ``--json`` prints)."""
        return {
            "metrics": self.metrics.to_dict(),
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
            "files": {k: str(v) for k, v in self.files.items()},
        }


def _main_curve(m: MetricsLike) -> Curve | None:
    """The ROC curve that represents a model in the comparison plot (binary: the positive class)."""
    if isinstance(m, MetricsResult):
        if m.positive is not None and m.positive in m.roc:
            return m.roc[m.positive]
        return None
    roc, pos = m.get("roc"), m.get("positive")
    if isinstance(roc, Mapping) and isinstance(pos, str) and isinstance(roc.get(pos), Mapping):
        return Curve.from_dict(roc[pos])
    return None


def _plots(m: MetricsResult, curves: Mapping[str, Curve]) -> dict[str, bytes]:
    images: dict[str, bytes] = {}
    if m.roc:
        images["roc"] = plot_roc(m.roc)
    if m.pr:
        points = []
        if m.operating_point is not None:
            op = m.operating_point
            points.append((f"threshold {op.threshold:.3g}", op.recall, op.precision))
        for r in m.recall_at_precision:
            points.append((f"P≥{r.target_precision:g} threshold", r.achieved.recall, r.achieved.precision))
        images["pr"] = plot_pr(m.pr, points=points)
    images["confusion"] = plot_confusion(m.confusion, m.class_names)
    images["reliability"] = plot_reliability(m.calibration)
    if len(curves) > 1:
        images["comparison"] = plot_roc_comparison(curves)
    return images


def evaluate_predictions(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    *,
    positive: str | int | None = None,
    threshold: float | None = None,
    precision_thresholds: Mapping[float, float] | None = None,
    out_dir: Path | str | None = None,
    card: Mapping[str, Any] | None = None,
    latency: Mapping[str, Any] | None = None,
    compare_with: Mapping[str, MetricsLike] | None = None,
    name: str = "this model",
    bootstrap: int = 0,
    seed: int = 0,
    n_bins: int = 15,
    title: str | None = None,
) -> EvaluationResult:
    """Evaluate predicted probabilities; with ``out_dir``, also write plots, JSON and an HTML report.

    Arguments are those of :func:`~modelfab.evaluate.metrics.compute_metrics`, plus: ``card`` (the
    model card summary shown at the top), ``latency`` (e.g. ``{"device": "cpu", "p50_ms": 3.1}``),
    ``compare_with`` (named results of the parent / an earlier version: ``MetricsResult``, its
    ``to_dict()``, or flat metric dicts) compared against this model, called ``name``.

    Files in ``out_dir`` (each written atomically): ``metrics.json``, ``roc.png``, ``pr.png``
    (when defined), ``confusion.png``, ``reliability.png``, ``comparison.png`` (when another
    model's ROC curve is available) and ``report.html``. Returns their paths in ``files``.
    """
    metrics = compute_metrics(
        y_true, probs, class_names, positive=positive, threshold=threshold,
        precision_thresholds=precision_thresholds, n_bins=n_bins, bootstrap=bootstrap, seed=seed,
    )
    comparison = None
    if compare_with:
        comparison = compare_metrics({name: metrics, **{str(k): v for k, v in compare_with.items()}})
    if out_dir is None:
        return EvaluationResult(metrics=metrics, comparison=comparison)
    out = Path(out_dir)
    curves: dict[str, Curve] = {}
    for model_name, m in {name: metrics, **dict(compare_with or {})}.items():
        c = _main_curve(m)
        if c is not None:
            curves[str(model_name)] = c
    images = _plots(metrics, curves)
    files: dict[str, Path] = {}
    for key, png in images.items():
        files[key] = write_atomic(out / f"{key}.png", png)
    files["metrics"] = out / "metrics.json"
    files["report"] = out / "report.html"
    result = EvaluationResult(metrics=metrics, comparison=comparison, files=files)
    write_atomic(files["metrics"], json.dumps(result.to_dict(), indent=2).encode("utf-8"))
    html_text = render_html(
        metrics, images=images, card=card, latency=latency, comparison=comparison,
        title=title or f"Evaluation report: {name}",
    )
    write_report(files["report"], html_text)
    return result
