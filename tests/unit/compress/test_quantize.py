"""Static INT8: a registered child with a task-level parity record that an independent run confirms,
and clear errors for missing calibration data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from modelfab.compress import EXTRACTORS, deployable, extract, load_predictor
from modelfab.compress.data import labelled_split, run_batches
from modelfab.compress.parity import MAX_METRIC_DROP, MIN_AGREEMENT
from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.data import import_image_folder
from modelfab.store.store import Store
from tests.compress_fixtures import compress_store, one_thread, write_few


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("int8")
    with one_thread():
        yield compress_store(tmp / "home", tmp)


def test_int8_child_and_task_parity(st: Store) -> None:
    res = extract(st, "blobs-probe", "quantize", {"samples": 8})
    child, parent = res.model, st.get_model("blobs-probe")
    assert child.parent_id == parent.id and child.architecture["precision"] == "int8"
    assert res.details["calibration"] == "blobs@1:calibration" and res.details["samples"] == 6  # the whole split
    graph = onnx.load_from_string(st.artifacts.get_bytes(str(child.weights_digest)))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Softmax" in ops  # QDQ, softmax kept fp32
    assert res.artifact_bytes < 0.4 * res.details["fp32_bytes"]  # int8 weights: about a quarter
    p = res.parity
    assert p["kind"] == "task" and p["metric"] == "auroc" and p["data"] == "blobs@1:val"
    # an independent run of both graphs reproduces the record and its verdict
    fp32, int8 = load_predictor(st, parent), load_predictor(st, child)
    val = labelled_split(st, fp32, None)
    agree = float((fp32.decide(run_batches(fp32, val.batches)) == int8.decide(run_batches(int8, val.batches))).mean())
    assert p["label_agreement"] == pytest.approx(agree)
    expected = agree >= MIN_AGREEMENT and abs(p["reference_value"] - p["value"]) <= MAX_METRIC_DROP
    assert (p["status"] == "passed") == expected
    assert deployable(st, child)[0] == expected
    probs = int8.predict_proba([np.full((48, 48), 150, np.uint8)])
    assert probs.shape == (1, 2) and abs(float(probs.sum()) - 1) < 1e-5


def test_int8_of_an_int8_model_is_refused(st: Store) -> None:
    child = extract(st, "blobs-probe", "quantize", {"samples": 4, "name": "twice"}).model
    with pytest.raises(ConfigError, match="quantize an L2 or its fp32 ONNX export"):
        extract(st, child.id, "quantize")


def test_missing_calibration_data(st: Store, tmp_path: Path) -> None:
    import_image_folder(st, write_few(tmp_path / "few", 2), "few")
    empty = [s for s in ("calibration", "val", "test") if not [r for r in st.version_items("few") if r.split == s]]
    assert empty, "the tiny dataset should leave a split empty"
    with pytest.raises(DataError, match=f"few@1 has no items in split '{empty[0]}'; INT8 needs calibration images"):
        extract(st, "blobs-probe", "quantize", {"calibration": f"few@1:{empty[0]}"})
    with pytest.raises(NotFoundError):
        extract(st, "blobs-probe", "quantize", {"calibration": "nosuch@1"})
    with pytest.raises(ConfigError, match="samples: must be >= 1"):
        extract(st, "blobs-probe", "quantize", {"samples": 0})
    with pytest.raises(NotFoundError, match="unknown extractor 'prune'"):
        extract(st, "blobs-probe", "prune")
    assert "quantize" in EXTRACTORS
