"""Export with parity: ONNX / TorchScript children of real tiny L2s (probe and LoRA), a failing
parity case, an operator that cannot be exported, and bad references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import Tensor, nn

from modelfab.compress import deployable, export_model, load_predictor
from modelfab.compress.data import labelled_split, run_batches
from modelfab.compress.graph import export_onnx
from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.store.models import model_card
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, tune
from tests.compress_fixtures import compress_store, one_thread
from tests.tune_fixtures import tiny_text_store


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("export")
    with one_thread():
        yield compress_store(tmp / "home", tmp)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity_passes(st: Store, fmt: str) -> None:
    res = export_model(st, "blobs-probe", fmt)
    child, parent = res.model, st.get_model("blobs-probe")
    assert res.passed and res.parity["max_abs_diff"] <= 1e-4 and res.parity["top1_agreement"] == 1.0
    assert res.parity["data"] == "blobs@1:val" and res.parity["items"] == 4
    assert child.parent_id == parent.id and child.tier == "L2" and child.task == parent.task == "image-defect"
    assert child.architecture["format"] == fmt and child.dataset_version_id == parent.dataset_version_id
    assert child.architecture["runtime"] == {"onnx": "onnxruntime", "torchscript": "torch"}[fmt]
    data = st.artifacts.get_bytes(str(child.weights_digest))
    assert len(data) == res.artifact_bytes
    if fmt == "onnx":  # a protobuf, not a pickle
        graph = onnx.load_from_string(data)
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == ["input"] and graph.graph.output[0].name == "probabilities"
    ok, why = deployable(st, child)
    assert ok and "parity passed" in why
    # the child runs through its runtime at any batch size and gives the parent's probabilities
    parent_p, child_p = load_predictor(st, parent), load_predictor(st, child)
    val = labelled_split(st, parent_p, None)
    x = torch.cat(val.batches)[:3]
    assert np.abs(parent_p.run(x) - child_p.run(x)).max() <= 1e-4
    assert child_p.run(x[:1]).shape == (1, 2)
    assert model_card(st, child.id)["exported"]["classes"] == parent_p.classes


def test_lora_adapters_are_merged_before_export(st: Store) -> None:
    tune(st, base="lite0-64", data="blobs", name="blobs-lora", cfg=TuneConfig(method="lora", epochs=1, batch_size=8))
    res = export_model(st, "blobs-lora", "onnx")
    assert res.passed, res.parity
    graph = onnx.load_from_string(st.artifacts.get_bytes(str(res.model.weights_digest)))
    assert not [i.name for i in graph.graph.initializer if "lora" in i.name]


def test_zero_tolerance_fails_and_blocks_deployment(st: Store) -> None:
    """fp32 runtimes differ in the last bits (different convolution kernels): with tolerance 0 the
    ONNX export's parity fails, is recorded with its reason and the child cannot be deployed."""
    res = export_model(st, "blobs-probe", "onnx", tolerance=0.0, name="strict-onnx")
    assert not res.passed and res.parity["max_abs_diff"] > 0
    assert "> tolerance 0" in res.parity["reason"]
    stored = st.get_model("strict-onnx")
    assert stored.metrics["parity"]["status"] == "failed"
    ok, why = deployable(st, "strict-onnx")
    assert not ok and "failed export parity" in why and "tolerance" in why


def test_parity_numbers_match_an_independent_run(st: Store) -> None:
    res = export_model(st, "blobs-probe", "onnx", name="check-onnx")
    torch_p, onnx_p = load_predictor(st, "blobs-probe"), load_predictor(st, "check-onnx")
    val = labelled_split(st, torch_p, None)
    diff = float(np.abs(run_batches(torch_p, val.batches) - run_batches(onnx_p, val.batches)).max())
    assert res.parity["max_abs_diff"] == pytest.approx(diff, abs=1e-7)


class _Eig(nn.Module):
    def forward(self, x: Tensor) -> Tensor:  # (N, 3, S, S) -> (N, 2)
        return torch.linalg.eigvals(x[:, 0, :4, :4]).real.sum(-1, keepdim=True).expand(-1, 2)


def test_unsupported_operator_is_named() -> None:
    with pytest.raises(ConfigError, match=r"operator aten::linalg_eigvals cannot be exported"):
        export_onnx(_Eig(), torch.randn(2, 3, 8, 8))


def test_bad_references(st: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown model 'nope'"):
        export_model(st, "nope", "onnx")
    with pytest.raises(ConfigError, match="format: unknown 'tflite'"):
        export_model(st, "blobs-probe", "tflite")
    with pytest.raises(ConfigError, match="cannot be run"):
        export_model(st, "lite0-64", "onnx")  # an L0 backbone: no task head
    child = export_model(st, "blobs-probe", "onnx", name="again-onnx").model
    with pytest.raises(ConfigError, match="already an exported onnx model"):
        export_model(st, child.id, "onnx")
    text = tiny_text_store(tmp_path / "home", tmp_path)
    tune(text, base="tiny-bert", data="reviews", name="rev", cfg=TuneConfig(method="probe"))
    with pytest.raises(ConfigError, match="text model; only vision models are exported"):
        export_model(text, "rev", "onnx")
