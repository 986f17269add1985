"""Structured channel pruning: a registered ONNX child of a real tiny L2 with fewer channels, MACs and
parameters, a compression parity record that an independent run confirms, and clear refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError

import modelfab.compress.prune  # noqa: F401  # registers the extractor
from modelfab.compress import EXTRACTORS, extract, load_predictor
from modelfab.compress.data import labelled_split, run_batches, split_metrics
from modelfab.compress.kd import KDConfig, finetune_kd, teacher_data
from modelfab.compress.prune import count, logits_network, prune_channels
from modelfab.core.errors import ConfigError
from modelfab.store.models import list_models, model_card
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, tune
from tests.compress_fixtures import compress_store, one_thread
from tests.tune_fixtures import tiny_text_store

FAST = {"epochs": 1, "max_train": 16, "batch_size": 8}  # epochs: the CLI's name of finetune_epochs


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("prune")
    with one_thread():
        yield compress_store(tmp / "home", tmp)


def _conv_widths(data: bytes) -> list[int]:
    graph = onnx.load_from_string(data).graph
    inits = {i.name: i for i in graph.initializer}
    return [int(inits[n.input[1]].dims[0]) for n in graph.node if n.op_type == "Conv" and n.input[1] in inits]


def test_pruned_child_is_smaller_and_runs(st: Store) -> None:
    assert "prune" in EXTRACTORS
    res = extract(st, "blobs-probe", "prune", {"ratio": 0.5, **FAST})
    child, parent = res.model, st.get_model("blobs-probe")
    assert child.name == "blobs-probe-pruned50" and child.parent_id == parent.id
    assert child.architecture["format"] == "onnx" and child.architecture["precision"] == "fp32"
    d = res.details
    macs, params = d["macs"], d["params"]
    # uniform 50%: a 1x1 conv keeps a quarter of its MACs; the stem input and the class outputs stay whole
    assert 0.15 < params["after"] / params["before"] < 0.4
    assert 0.15 < macs["after"] / macs["before"] < 0.4
    assert len(d["history"]) == 1 and d["seconds"] > 0 and d["metric"] == "auroc"
    card = model_card(st, child.id)["exported"]["compression"]
    assert card["method"] == "prune" and card["teacher"] == parent.id and card["ratio"] == 0.5
    assert card["macs"] == macs and card["params"] == params
    data = st.artifacts.get_bytes(str(child.weights_digest))
    widths = _conv_widths(data)
    assert widths[0] == 16 and max(widths) == 640  # stem 32 -> 16, head conv 1280 -> 640
    onnx.checker.check_model(onnx.load_from_string(data))
    # the compression record, confirmed by an independent ONNX Runtime run of the child
    rec = res.parity
    assert rec["kind"] == "compression" and rec["method"] == "prune" and rec["metric"] == "auroc"
    assert rec["data"] == "blobs@1:val" and rec["status"] in ("passed", "failed")
    pred = load_predictor(st, child)
    assert pred.format == "onnx" and pred.input_spec.image_size == 64
    val = labelled_split(st, pred, None)
    again = split_metrics(pred, val.y, run_batches(pred, val.batches))
    assert again["auroc"] == pytest.approx(rec["value"], abs=1e-6)
    assert rec["reference_value"] == pytest.approx(d["teacher_val"])
    probs = pred.predict_proba([np.full((48, 48), 150, np.uint8), np.zeros((48, 48), np.uint8)])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_taylor_on_a_lora_teacher_without_finetuning(st: Store) -> None:
    tune(st, base="lite0-64", data="blobs", name="blobs-lora", cfg=TuneConfig(method="lora", epochs=1, batch_size=8))
    res = extract(st, "blobs-lora", "prune", {"ratio": 0.3, "importance": "taylor", "finetune_epochs": 0,
                                              "max_train": 16, "name": "lora-taylor"})
    assert res.model.name == "lora-taylor" and res.details["history"] == []
    assert res.details["importance"] == "taylor" and res.details["round_to"] == 8
    widths = _conv_widths(st.artifacts.get_bytes(str(res.model.weights_digest)))
    assert all(w % 8 == 0 for w in widths) and widths[0] == 16  # 32 * 0.7 = 22.4 rounded to a multiple of 8
    assert res.details["params"]["after"] < 0.7 * res.details["params"]["before"]
    assert load_predictor(st, res.model).predict_proba([np.full((48, 48), 90, np.uint8)]).shape == (1, 2)


def test_pruning_keeps_the_network_consistent(st: Store) -> None:
    teacher = teacher_data(st, st.get_model("blobs-probe"), max_train=8)
    net, final = logits_network(teacher)  # folded head, same logits as the teacher (checked inside)
    before = count(net, 64)
    prune_channels(net, final, 64, 0.75)
    after = count(net, 64)
    assert after[0] < 0.15 * before[0] and after[1] < 0.15 * before[1]
    assert final.out_features == 2 and final.in_features == 320  # classes kept, inputs follow the head conv
    blocks: Any = net.encoder.blocks
    for block in blocks:  # depthwise convs stay depthwise, residual widths agree
        dw = block.dw.conv
        assert dw.groups == dw.in_channels == dw.out_channels == block.project.conv.in_channels
        if block.residual:
            assert block.project.conv.out_channels == (block.expand or block.dw).conv.in_channels
    x = torch.cat(teacher.val.batches)
    with torch.no_grad():
        assert net(x).shape == (len(x), 2)


def _bn_stats(net: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var) if t is not None]


@pytest.mark.parametrize("freeze", [True, False])
def test_kd_finetuning_freezes_batchnorm_statistics_on_request(st: Store, freeze: bool) -> None:
    teacher = teacher_data(st, st.get_model("blobs-probe"), max_train=16)
    net, final = logits_network(teacher)
    prune_channels(net, final, 64, 0.5)
    before = _bn_stats(net)
    weights = [p.detach().clone() for p in net.parameters()]
    finetune_kd(net, teacher, KDConfig(epochs=1, batch_size=8, freeze_bn=freeze, patience=5))
    same = [torch.equal(a, b) for a, b in zip(before, _bn_stats(net), strict=True)]
    assert all(same) if freeze else not any(same)  # frozen: the teacher's statistics, not the batches'
    assert any(not torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True))  # it trained


@pytest.mark.parametrize("ratio", [0, 1.2, 0.95, -0.1])
def test_bad_ratio_fails_before_any_work(st: Store, ratio: float) -> None:
    n = len(list_models(st))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"prune: ratio must be in \(0, 0\.95\)"):
        extract(st, "blobs-probe", "prune", {"ratio": ratio})
    assert time.perf_counter() - t0 < 1.0 and len(list_models(st)) == n
    with pytest.raises(ValidationError, match="ratoi"):
        extract(st, "blobs-probe", "prune", {"ratoi": 0.5})


def test_non_l2_and_non_vision_sources_are_refused(st: Store, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be run"):
        extract(st, "lite0-64", "prune", {"ratio": 0.5})  # an L0 backbone: no task head
    child = extract(st, "blobs-probe", "prune", {"ratio": 0.2, "name": "once", "finetune_epochs": 0,
                                                 "max_train": 8}).model
    with pytest.raises(ConfigError, match="compress the tuned L2 it came from"):
        extract(st, child.id, "prune", {"ratio": 0.5})
    text = tiny_text_store(tmp_path / "home", tmp_path)
    tune(text, base="tiny-bert", data="reviews", name="rev", cfg=TuneConfig(method="probe"))
    with pytest.raises(ConfigError, match="text model"):
        extract(text, "rev", "prune", {"ratio": 0.5})
