"""Side-by-side comparison of several models' headline metrics, with deltas against the first.

Inputs are named :class:`~modelfab.evaluate.metrics.MetricsResult` objects, their ``to_dict()``
output (as stored with a registered model: its ``"summary"`` is used), or flat ``{metric: value}``
dicts. The first entry is the reference (usually the model being evaluated); every other model's
delta is ``value(model) - value(first)``. Whether that is good depends on the metric (see
:data:`LOWER_IS_BETTER`); the rich table colours a delta green when the reference is the better one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from modelfab.core.errors import ConfigError
from modelfab.evaluate.metrics import MetricsResult

#: Metrics where lower is better; all others are higher-is-better.
LOWER_IS_BETTER = frozenset({"ece", "brier", "mce", "nll"})

MetricsLike = MetricsResult | Mapping[str, Any]


def headline(m: MetricsLike) -> dict[str, float | None]:
    """Flat ``{metric: value}`` of a result, a stored ``to_dict()`` (uses its ``"summary"``) or a flat dict.

    Non-numeric values in a flat dict are dropped; non-finite numbers become ``None``.
    """
    if isinstance(m, MetricsResult):
        flat: Mapping[str, Any] = m.summary()
    elif isinstance(m, Mapping):
        flat = m["summary"] if isinstance(m.get("summary"), Mapping) else m
    else:
        raise ConfigError(f"cannot compare a {type(m).__name__}: pass a MetricsResult or a dict of metrics")
    out: dict[str, float | None] = {}
    for k, v in flat.items():
        if v is None:
            out[str(k)] = None
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = float(v) if math.isfinite(float(v)) else None
    return out


@dataclass(frozen=True)
class Comparison:
    """Rows of ``{"metric", "values": {model: v}, "deltas": {model: v - first}}``.

    ``deltas`` hold ``value(model) - value(first model)`` for every model but the first
    (``None`` when either side is missing). ``better`` names, per metric, whether higher or lower
    is better, so a reader can tell an improvement from a regression.
    """

    models: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"reference": self.models[0], "models": list(self.models), "rows": [dict(r) for r in self.rows]}

    def to_rich_table(self, title: str | None = None) -> Table:
        """A rich table: one row per metric, one column per model, deltas coloured green/red by direction."""
        t = Table(title=title or f"comparison (deltas vs {self.models[0]})")
        t.add_column("metric", style="bold")
        for i, name in enumerate(self.models):
            t.add_column(name if i == 0 else f"{name} (Δ)", justify="right")
        for row in self.rows:
            cells = [_fmt(row["values"][self.models[0]])]
            for name in self.models[1:]:
                v, d = row["values"][name], row["deltas"][name]
                cells.append(f"{_fmt(v)} ({_fmt_delta(d, row['better'])})")
            t.add_row(row["metric"], *cells)
        return t


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _fmt_delta(d: float | None, better: str) -> str:
    if d is None:
        return "–"
    if abs(d) < 5e-5:
        return "±0"
    # d = other - reference: the reference is better when the difference points the "worse" way.
    good_for_other = d > 0 if better == "higher" else d < 0
    colour = "red" if good_for_other else "green"
    return f"[{colour}]{d:+.4f}[/{colour}]"


def compare_metrics(results: Mapping[str, MetricsLike], metrics: Sequence[str] | None = None) -> Comparison:
    """Compare named results; the first (in mapping order) is the reference.

    ``metrics`` picks and orders the rows; by default, the union of all keys in first-seen order.
    In the rich table a delta is green when the reference is better than that model, red when worse.
    """
    if not results:
        raise ConfigError("compare_metrics needs at least one named result")
    flat = {str(name): headline(r) for name, r in results.items()}
    names = tuple(flat)
    if metrics is None:
        keys: list[str] = []
        for h in flat.values():
            keys.extend(k for k in h if k not in keys)
    else:
        keys = list(metrics)
    rows = []
    ref = flat[names[0]]
    for key in keys:
        values = {n: flat[n].get(key) for n in names}
        deltas: dict[str, float | None] = {}
        for n in names[1:]:
            v, r = values[n], ref.get(key)
            deltas[n] = None if v is None or r is None else v - r
        better = "lower" if key in LOWER_IS_BETTER else "higher"
        rows.append({"metric": key, "better": better, "values": values, "deltas": deltas})
    return Comparison(models=names, rows=tuple(rows))
