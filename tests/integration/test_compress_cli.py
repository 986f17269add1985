"""``modelfab export / extract / profile / models select`` end to end on a tiny real L2, in-process and
once as a real subprocess; bad input gives one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compress_fixtures import compress_store, one_thread


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("compress-cli")
    with one_thread():
        compress_store(tmp / "home", tmp).close()
        yield tmp / "home"


@pytest.fixture()
def env(built: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MODELFAB_HOME", str(built))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    monkeypatch.delenv("MODELFAB_ARTIFACTS", raising=False)
    with one_thread():
        yield built


def test_export_extract_profile_select(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("export", "blobs-probe", "--format", "onnx", "--json")
    assert res.code == 0, res.err
    exported = json.loads(res.out)
    assert exported["name"] == "blobs-probe-onnx" and exported["parity"]["status"] == "passed"
    res = cli("extract", "blobs-probe-onnx", "--method", "quantize", "--samples", "4", "--json")
    assert res.code in (0, 1), res.err  # 1: registered but parity failed (reported on stderr)
    int8 = json.loads(res.out)
    assert int8["parent_id"] == exported["id"] and int8["parity"]["kind"] == "task"
    assert (res.code == 0) == (int8["parity"]["status"] == "passed")
    res = cli("profile", "blobs-probe-onnx", "--batch", "1,2", "--threads", "1", "--repeats", "3", "--json")
    assert res.code == 0, res.err
    rows = json.loads(res.out)
    assert [r["batch"] for r in rows] == [1, 2] and all(r["p50_ms"] <= r["p95_ms"] for r in rows)
    table = cli("profile", "blobs-probe-onnx", "--batch", "1", "--threads", "1", "--repeats", "2")
    assert table.code == 0 and "p50 ms" in table.out and "onnxruntime" in table.out
    res = cli("models", "select", "--task", "image-defect", "--data", "blobs@1", "--max-latency-ms", "60000",
              "--runtime", "onnxruntime", "--threads", "1", "--json")
    assert res.code == 0, res.err
    sel = json.loads(res.out)
    assert sel["chosen"]["runtime"] == "onnxruntime" and sel["metric"] == "auroc"
    assert {c["name"]: c["reason"] for c in sel["candidates"]}["blobs-probe"] == "runs on torch, not onnxruntime"


def test_failed_parity_exits_1(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("export", "blobs-probe", "--tolerance", "0", "--name", "zero-tol")
    assert res.code == 1 and "parity failed" in res.err and "not deployable" in res.err
    assert "failed" in res.out  # the record is printed


def test_bad_input_one_line_exit_2(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    for args, text in (
        (("export", "nope"), "unknown model 'nope'"),
        (("profile", "nope"), "unknown model 'nope'"),
        (("extract", "blobs-probe", "--method", "quantize", "--calibration", "blobs@1:nosplit"), "unknown split"),
        (("extract", "blobs-probe", "--method", "quantize", "--calibration", "nosuch@1"), "nosuch"),
        (("extract", "blobs-probe", "--method", "shrink"), "unknown extractor 'shrink'"),
        (("profile", "blobs-probe", "--batch", "1,x"), "batch: expected comma-separated integers"),
    ):
        res = cli(*args)
        assert res.code == 2 and text in res.err and res.err.count("\n") == 1, (args, res.err)


def test_budget_nothing_fits_prints_table_and_exits_2(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("models", "select", "--task", "image-defect", "--data", "blobs@1", "--max-latency-ms", "0.001",
              "--runtime", "torch", "--threads", "1")
    assert res.code == 2 and "blobs-probe" in res.out  # the table is still printed
    assert "no image-defect model meets p50 <= 0.001 ms" in res.err and "the fastest, blobs-probe:1" in res.err
    assert res.err.count("\n") == 1


def test_real_subprocess(env: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelfab.cli.main", "profile", "blobs-probe", "--batch", "1", "--threads", "1",
         "--repeats", "2", "--warmup", "1", "--json"],
        env={**os.environ, "MODELFAB_HOME": str(env)}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert row["runtime"] == "torch" and row["batch"] == 1 and row["size_mb"] > 1
