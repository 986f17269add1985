"""One self-contained HTML evaluation report: inline CSS, PNGs as base64 data URIs, no external assets.

Every value that comes from outside (card fields, class names, model names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelfab.evaluate.compare import Comparison
from modelfab.evaluate.metrics import MetricsResult
from modelfab.evaluate.plots import write_atomic

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}th{background:#f4f6f8}
td.k,th.k{text-align:left}.muted{color:#777;font-size:.85em}
.good{color:#1a7f37}.bad{color:#c62828}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}
.plots img{max-width:520px;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
ul.notes li{color:#8a5a00}
"""

_PLOT_CAPTIONS = {
    "roc": "ROC curve",
    "pr": "Precision-recall curve",
    "confusion": "Confusion matrix",
    "reliability": "Reliability diagram",
    "comparison": "ROC comparison",
}


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _e(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f'<th class="{"k" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"k" if i == 0 else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        text = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
        if len(text) > 400:
            text = text[:400] + "…"
        rows.append([_e(k), _num(v) if isinstance(v, int | float) else _e(text)])
    return _table(["field", "value"], rows)


def _metrics_section(m: MetricsResult) -> str:
    parts = [f'<p class="muted">{m.n_samples} samples · task {_e(m.task)} · decision: {_e(m.decision)}'
             + (f" · positive class {_e(m.positive)}" if m.positive else "") + "</p>"]
    summary = [[_e(k), _num(v)] for k, v in m.summary().items()]
    if m.auroc_ci is not None:
        summary.append(["auroc 95% CI (bootstrap)", f"{m.auroc_ci[0]:.4f} – {m.auroc_ci[1]:.4f}"])
    parts.append(_table(["metric", "value"], summary))
    if m.operating_point is not None or m.recall_at_precision:
        rows = []
        if m.operating_point is not None:
            rows.append([*_op_row("operating threshold (validation)", m.operating_point), "–"])
        for r in m.recall_at_precision:
            label = f"precision ≥ {r.target_precision:g} (threshold from validation)"
            rows.append([*_op_row(label, r.achieved), _num(r.oracle_recall)])
        parts.append("<h3>Operating points</h3>" + _table(
            ["point", "threshold", "precision", "recall", "F1", "FPR", "TP", "FP", "TN", "FN",
             "recall with test-chosen threshold (optimistic)"],
            rows,
        ))
    per = [[_e(c.name), _num(c.precision), _num(c.recall), _num(c.f1), str(c.support), _num(c.auroc), _num(c.ap)]
           for c in m.per_class]
    parts.append("<h3>Per class</h3>" + _table(["class", "precision", "recall", "F1", "support", "AUROC", "AP"], per))
    cm_rows = [[_e(name), *[str(v) for v in row]] for name, row in zip(m.class_names, m.confusion, strict=True)]
    parts.append("<h3>Confusion matrix (rows: true, columns: predicted)</h3>"
                 + _table(["true \\ predicted", *m.class_names], cm_rows))
    cal = m.calibration
    parts.append(f"<h3>Calibration</h3><p>ECE ({cal.n_bins} bins) {cal.ece:.4f} · MCE {cal.mce:.4f} · "
                 f"Brier {cal.brier:.4f}</p>")
    return "".join(parts)


def _op_row(label: str, op: Any) -> list[str]:
    return [_e(label), _num(op.threshold), _num(op.precision), _num(op.recall), _num(op.f1), _num(op.fpr),
            str(op.tp), str(op.fp), str(op.tn), str(op.fn)]


def _comparison_section(c: Comparison) -> str:
    ref = c.models[0]
    header = ["metric", ref, *[f"{n} (Δ vs {ref})" for n in c.models[1:]]]
    rows = []
    for row in c.rows:
        cells = [_e(row["metric"]), _num(row["values"][ref])]
        for n in c.models[1:]:
            d = row["deltas"][n]
            cls = ""
            if d is not None and abs(d) >= 5e-5:
                other_better = d > 0 if row["better"] == "higher" else d < 0
                cls = "bad" if other_better else "good"
            delta = "–" if d is None else f"{d:+.4f}"
            cells.append(f'{_num(row["values"][n])} <span class="{cls}">({delta})</span>')
        rows.append(cells)
    return ('<p class="muted">Δ = that model minus the reference; green: the reference is better.</p>'
            + _table(header, rows))


def render_html(
    metrics: MetricsResult,
    *,
    images: Mapping[str, bytes] | None = None,
    card: Mapping[str, Any] | None = None,
    latency: Mapping[str, Any] | None = None,
    comparison: Comparison | None = None,
    title: str = "Evaluation report",
    generated_at: datetime | None = None,
) -> str:
    """The report as one HTML string. ``images`` maps plot names (``roc``, ``pr``, ``confusion``,
    ``reliability``, ``comparison`` or any other) to PNG bytes, embedded as data URIs."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S %Z")
    body = [f"<h1>{_e(title)}</h1><p class=\"muted\">generated {_e(when)}</p>"]
    if card:
        body.append("<h2>Model card</h2>" + _kv_table(card))
    body.append("<h2>Metrics</h2>" + _metrics_section(metrics))
    if latency:
        body.append("<h2>Latency on this machine</h2>" + _kv_table(latency))
    if comparison is not None and len(comparison.models) > 1:
        body.append("<h2>Comparison</h2>" + _comparison_section(comparison))
    if images:
        figs = []
        for name, png in images.items():
            b64 = base64.b64encode(png).decode("ascii")
            cap = _PLOT_CAPTIONS.get(name, name)
            figs.append(f'<figure><img alt="{_e(cap)}" src="data:image/png;base64,{b64}">'
                        f"<figcaption>{_e(cap)}</figcaption></figure>")
        body.append('<h2>Plots</h2><div class="plots">' + "".join(figs) + "</div>")
    if metrics.notes:
        body.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in metrics.notes)
                    + "</ul>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(path: Path, html_text: str) -> Path:
    """Write the report atomically (temp file + rename)."""
    return write_atomic(Path(path), html_text.encode("utf-8"))
