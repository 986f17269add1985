"""PNG plots, the HTML report, comparison tables and evaluate_predictions end to end (real files)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from modelfab.core.errors import ConfigError
from modelfab.evaluate import (
    choose_threshold_for_precision,
    choose_threshold_for_recall,
    compare_metrics,
    compute_metrics,
    evaluate_predictions,
)
from modelfab.evaluate.cli_render import render_confusion_table, render_metrics_table, render_per_class_table
from modelfab.evaluate.plots import plot_confusion, plot_pr, plot_reliability, plot_roc, write_atomic


def _binary(seed: int, n: int = 200, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.normal(size=n) + signal * y
    p1 = 1 / (1 + np.exp(-z))
    return y, np.stack([1 - p1, p1], axis=1)


def _is_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_each_plot_is_a_valid_png_written_atomically(tmp_path: Path) -> None:
    y, p = _binary(0)
    m = compute_metrics(y, p, ["ok", "defect"], threshold=0.5)
    for name, fn in [
        ("roc", lambda path: plot_roc(m.roc, path)),
        ("pr", lambda path: plot_pr(m.pr, path, points=[("thr", 0.5, 0.8)])),
        ("confusion", lambda path: plot_confusion(m.confusion, m.class_names, path)),
        ("reliability", lambda path: plot_reliability(m.calibration, path)),
    ]:
        path = tmp_path / "sub" / f"{name}.png"
        data = fn(path)
        assert path.read_bytes() == data
        w, h = _is_png(data)
        assert w > 100 and h > 100
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "confusion.png", "pr.png", "reliability.png", "roc.png"]  # no temp files left behind


def test_write_atomic_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_evaluate_predictions_writes_report_plots_and_json(tmp_path: Path) -> None:
    y, p = _binary(1, 600)
    val, test = slice(0, 300), slice(300, 600)
    thr = choose_threshold_for_recall(y[val], p[val, 1], 0.95)
    t90 = choose_threshold_for_precision(y[val], p[val, 1], 0.9, strict=False)
    parent = compute_metrics(*_binary(2, 300, signal=0.8), ["ok", "defect"], threshold=0.5)
    earlier = {"accuracy": 0.7, "auroc": 0.75, "ap": 0.7, "ece": 0.2, "note": "text is ignored"}
    res = evaluate_predictions(
        y[test], p[test], ["ok", "defect <b>"], threshold=thr, precision_thresholds={0.9: t90},
        out_dir=tmp_path / "eval", card={"name": "solar-defect", "parent": "lite0", "config": {"lr": 0.001}},
        latency={"device": "cpu", "p50_ms": 3.2, "p95_ms": 4.8},
        compare_with={"parent": parent, "v1": earlier}, name="v2", bootstrap=100,
    )
    files = res.files
    assert set(files) == {"roc", "pr", "confusion", "reliability", "comparison", "metrics", "report"}
    for key in ("roc", "pr", "confusion", "reliability", "comparison"):
        _is_png(files[key].read_bytes())
    stored = json.loads(files["metrics"].read_text())
    assert stored["metrics"]["summary"]["auroc"] == pytest.approx(res.metrics.auroc)
    assert stored["files"]["report"] == str(files["report"])
    html = files["report"].read_text()
    # self-contained: no external assets or links, every plot embedded as a data URI
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    srcs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(srcs) == 5
    for s in srcs:
        _is_png(base64.b64decode(s))
    assert "defect &lt;b&gt;" in html and "defect <b>" not in html  # escaped
    for text in ("solar-defect", "p95_ms", "Δ vs v2", "parent", "v1", "Confusion matrix", "ECE"):
        assert text in html
    # comparison: deltas vs the first (this model)
    comp = res.comparison
    assert comp is not None and comp.models == ("v2", "parent", "v1")
    row = next(r for r in comp.rows if r["metric"] == "auroc")
    assert row["deltas"]["v1"] == pytest.approx(0.75 - res.metrics.auroc)  # type: ignore[operator]


def test_evaluate_predictions_without_out_dir_writes_nothing(tmp_path: Path) -> None:
    y, p = _binary(3)
    res = evaluate_predictions(y, p, ["a", "b"])
    assert res.files == {} and res.comparison is None
    json.dumps(res.to_dict(), allow_nan=False)


def test_multiclass_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 120)
    logits = rng.normal(size=(120, 4))
    logits[np.arange(120), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    res = evaluate_predictions(y, p, ["a", "b", "c", "d"], out_dir=tmp_path)
    assert {"roc", "pr", "confusion", "reliability", "report"} <= set(res.files)
    assert "comparison" not in res.files


def test_compare_metrics_table_and_dict() -> None:
    a = compute_metrics(*_binary(4), ["ok", "defect"])
    b = a.to_dict()  # a stored result: its summary is used
    c = {"auroc": 0.5, "ece": 0.01, "extra": 1}
    comp = compare_metrics({"new": a, "stored": b, "flat": c})
    d = comp.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["reference"] == "new"
    rows = {r["metric"]: r for r in d["rows"]}
    assert rows["auroc"]["deltas"]["stored"] == pytest.approx(0.0)
    assert rows["auroc"]["deltas"]["flat"] == pytest.approx(0.5 - a.auroc)  # type: ignore[operator]
    assert rows["ece"]["better"] == "lower"
    assert rows["extra"]["values"]["new"] is None and rows["extra"]["deltas"]["flat"] is None
    text = _text(comp.to_rich_table())
    assert "new" in text and "flat (Δ)" in text and "auroc" in text
    picked = compare_metrics({"x": c, "y": c}, metrics=["ece"])
    assert [r["metric"] for r in picked.rows] == ["ece"]
    with pytest.raises(ConfigError):
        compare_metrics({})
    with pytest.raises(ConfigError):
        compare_metrics({"x": 3})  # type: ignore[dict-item]


def test_cli_tables_render() -> None:
    y, p = _binary(5)
    res = evaluate_predictions(y, p, ["ok", "defect"], threshold=0.5, precision_thresholds={0.9: 0.8}, bootstrap=50)
    text = _text(render_metrics_table(res))
    for key in ("accuracy", "auroc", "auroc 95% CI", "recall@p0.9", "threshold"):
        assert key in text
    assert "defect" in _text(render_per_class_table(res.metrics))
    assert "true \\ pred" in _text(render_confusion_table(res))


def test_single_class_split_still_reports(tmp_path: Path) -> None:
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    res = evaluate_predictions([0, 0, 0], p, ["ok", "defect"], threshold=0.5, out_dir=tmp_path, bootstrap=20)
    assert res.metrics.auroc is None and res.metrics.auroc_ci is None
    assert "roc" not in res.files and "pr" not in res.files
    html = res.files["report"].read_text()
    assert "undefined" in html and "only negative samples" in html
    json.loads(res.files["metrics"].read_text())
