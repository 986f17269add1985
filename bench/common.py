"""Shared benchmark helpers: result files that resume per cell, confidence intervals, the machine."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from modelfab.core.machine import describe_machine

# two-sided 95% Student t quantiles by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t interval (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    t = _T95.get(len(values) - 1, 1.96)
    return m, t * statistics.stdev(values) / math.sqrt(len(values))


class ResultFile:
    """A JSON result file with a ``cells`` dict, written atomically after every finished cell."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.data: dict[str, Any] = {"machine": describe_machine(), **header, "cells": {}}
        if path.exists():
            old = json.loads(path.read_text())
            if all(old.get(k) == v for k, v in header.items()):
                self.data["cells"] = old.get("cells", {})

    def done(self, key: str) -> bool:
        return key in self.data["cells"]

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.data["cells"][key] = value
        self.save()

    def save(self) -> None:
        """Write the whole file (cells and any extra top-level keys) atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


METRICS = ("auroc", "ap", "recall@p0.9")


def fewshot_table(cells: list[dict[str, Any]], arms: list[str], title: str) -> tuple[Any, dict[str, list[Any]]]:
    """A rich table of mean ± 95% CI per (arm, metric, labels per class) and the AUROC curves."""
    from rich.table import Table

    sizes = sorted({c["shots"] for c in cells})
    table = Table(title=title)
    table.add_column("arm")
    table.add_column("metric")
    for s in sizes:
        table.add_column(f"{s}/class", justify="right")
    curves: dict[str, list[Any]] = {}
    for arm in arms:
        for metric in METRICS:
            row = []
            for s in sizes:
                vals = [c[metric] for c in cells if c["arm"] == arm and c["shots"] == s]
                m, h = mean_ci(vals)
                row.append(f"{m:.3f} ± {h:.3f} (n={len(vals)})" if vals else "-")
                if metric == "auroc" and vals:
                    curves.setdefault(arm, []).append((s, m, h))
            table.add_row(arm, metric, *row)
    return table, curves


def plot_curves(curves: dict[str, list[Any]], png: Path, title: str, xlabel: str) -> Path:
    """Test AUROC versus labels per class, one line with 95% error bars per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm, pts in curves.items():
        xs, ms, hs = zip(*pts, strict=True)
        ax.errorbar(xs, ms, yerr=hs, marker="o", capsize=3, label=arm)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test AUROC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
