"""Evaluation plots as PNG: ROC, precision-recall, confusion matrix, reliability diagram, comparison.

Each ``plot_*`` function returns the PNG bytes (so the HTML report can embed them) and, given a
``path``, also writes them atomically (temp file in the same folder, then rename). Figures are
built with matplotlib's object API on the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modelfab.evaluate.calibration import Calibration
from modelfab.evaluate.curves import Curve

_DPI = 100


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _new_figure(size: tuple[float, float] = (5.0, 4.5)) -> Figure:
    fig = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: Path | None) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        write_atomic(path, data)
    return data


def _auc_label(name: str, curve: Curve) -> str:
    return f"{name} (AUROC {float(np.trapezoid(curve.y, curve.x)):.3f})"


def plot_roc(curves: Mapping[str, Curve], path: Path | None = None, title: str = "ROC curve") -> bytes:
    """ROC curves (one per key: a class, or a model) with the chance diagonal."""
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=0.8, label="chance")
    for name, c in curves.items():
        ax.plot(c.x, c.y, linewidth=1.6, label=_auc_label(name, c), drawstyle="default")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path)


def plot_pr(
    curves: Mapping[str, Curve],
    path: Path | None = None,
    title: str = "Precision-recall curve",
    points: Sequence[tuple[str, float, float]] = (),
) -> bytes:
    """Precision-recall curves (step plots, as AP integrates them); ``points`` marks
    ``(label, recall, precision)`` operating points, e.g. the validation threshold."""
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, c in curves.items():
        ap = float(-np.sum(np.diff(c.x) * np.asarray(c.y)[:-1]))
        ax.step(c.x, c.y, where="post", linewidth=1.6, label=f"{name} (AP {ap:.3f})")
    for label, r, p in points:
        ax.plot([r], [p], marker="o", markersize=6, linestyle="none", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _finish(fig, path)


def plot_confusion(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: Path | None = None,
    title: str = "Confusion matrix",
) -> bytes:
    """Confusion matrix heat map, colour = row-normalised rate, cells annotated with counts."""
    cm = np.asarray(matrix, dtype=np.int64)  # (C, C)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    n = len(class_names)
    side = min(12.0, 3.0 + 0.5 * n)
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=8)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                colour = "white" if rate[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _finish(fig, path)


def plot_reliability(cal: Calibration, path: Path | None = None, title: str = "Reliability diagram") -> bytes:
    """Accuracy per confidence bin against the diagonal, with bin counts underneath."""
    fig = _new_figure((5.0, 5.5))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / cal.n_bins
    lows = [b.lower for b in cal.bins]
    accs = [b.accuracy if b.accuracy is not None else 0.0 for b in cal.bins]
    confs = [b.confidence if b.confidence is not None else 0.0 for b in cal.bins]
    ax.bar(lows, accs, width=width, align="edge", color="#4c78a8", edgecolor="white", label="accuracy")
    ax.bar(lows, np.asarray(confs) - np.asarray(accs), bottom=accs, width=width, align="edge",
           color="#e45756", alpha=0.35, edgecolor="none", label="gap to confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#555555", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {cal.ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(lows, [b.count for b in cal.bins], width=width, align="edge", color="#999999")
    ax_n.set_xlabel("confidence (top-class probability)")
    ax_n.set_ylabel("count")
    return _finish(fig, path)


def plot_roc_comparison(curves: Mapping[str, Curve], path: Path | None = None) -> bytes:
    """Several models' ROC curves on one axes (keys are model names)."""
    return plot_roc(curves, path, title="ROC comparison")
