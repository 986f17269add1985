"""select -> (nothing fits) -> export with parity -> extract -> select again, through the CLI on a tiny real
L2; and the plan of compressors a budget asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfab.compress.select import compression_plan
from modelfab.store.store import Store
from tests.compress_fixtures import compress_store


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    return compress_store(tmp_path / "home", tmp_path)


def test_plan_follows_the_budget(tiny: Store) -> None:
    teacher = tiny.get_model("blobs-probe")
    near = dict(compression_plan(tiny, teacher, latency_ms=10.0, budget_ms=8.0))
    assert list(near)[:2] == ["export", "quantize"] and near["prune"]["ratio"] == pytest.approx(0.15, abs=0.01)
    far = dict(compression_plan(tiny, teacher, latency_ms=10.0, budget_ms=3.9))
    assert "quantize" not in far and far["prune"]["ratio"] == pytest.approx(0.5, abs=0.01)  # 0.5 ** 1.36 = 0.39
    small = dict(compression_plan(tiny, teacher, latency_ms=10.0, budget_ms=100.0, size_mb=16.0, max_size_mb=4.0))
    assert small["prune"]["ratio"] == pytest.approx(0.55, abs=0.01)  # params shrink as (1 - p)^2, 5-point margin


@pytest.mark.timeout(600)
def test_select_extracts_when_nothing_fits(cli, tiny: Store) -> None:  # type: ignore[no-untyped-def]
    args = ("models", "select", "--task", "image-defect", "--data", "blobs@1", "--max-latency-ms", "100000",
            "--max-size-mb", "6", "--threads", "1")
    res = cli(*args)
    assert res.code == 2 and "no image-defect model meets" in res.err and "size <= 6 MB" in res.err
    res = cli(*args, "--extract-if-none", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    methods = [a["method"] for a in out["extracted"]]
    assert methods[0] == "export" and len(methods) >= 2  # the ONNX export (same size) cannot meet a size budget
    chosen = out["chosen"]
    assert chosen["size_mb"] <= 6 and chosen["format"] == "onnx"
    model = json.loads(cli("models", "show", chosen["id"], "--json").out)
    teacher = tiny.get_model("blobs-probe").id
    assert model["parent_id"] == teacher or json.loads(cli("models", "show", model["parent_id"], "--json").out)[
        "parent_id"] == teacher  # a child of the L2 (pruned) or of its ONNX export (INT8)
    assert model["metrics"]["parity"]["status"] == "passed"
    onnx = json.loads(cli("models", "show", "blobs-probe-onnx", "--json").out)
    assert onnx["metrics"]["parity"]["kind"] == "export" and onnx["metrics"]["parity"]["status"] == "passed"
