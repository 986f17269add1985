"""Distillation: a student L2 of another base trained against a teacher L2, registered with its record."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from modelfab.compress import export_model, extract, load_predictor
from modelfab.core.errors import ConfigError
from modelfab.store.models import model_card
from modelfab.store.store import Store
from modelfab.tune.train import kd_loss
from tests.compress_fixtures import compress_store, one_thread


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("distill")
    with one_thread():
        store = compress_store(tmp / "home", tmp)
        from modelfab.zoo.registry import register_foundation

        register_foundation(store, "efficientnet-lite0", name="lite0-48", image_size=48)
        yield store


def test_kd_loss_properties() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    probs = torch.softmax(logits, 1)
    # alpha 0: plain cross-entropy; a student equal to its teacher has zero KL at any temperature
    assert torch.allclose(kd_loss(logits, probs, y, 4.0, 0.0), torch.nn.functional.cross_entropy(logits, y))
    assert kd_loss(logits, probs, y, 4.0, 1.0).abs() < 1e-5
    assert kd_loss(-logits, probs, y, 4.0, 1.0) > 0.01


@pytest.mark.timeout(300)
def test_distill_registers_a_student(st: Store) -> None:
    res = extract(st, "blobs-probe", "distill", {"student": "lite0-48", "epochs": 2, "name": "blobs-student",
                                                  "feature_weight": 0.5, "max_metric_drop": 1.0})
    child = st.get_model("blobs-student")
    teacher = st.get_model("blobs-probe")
    assert res.model.id == child.id and child.parent_id == st.get_model("lite0-48").id  # a tuned L2 of its base
    assert child.config["extract"]["teacher"] == teacher.id
    assert model_card(st, child.id)["distillation"]["teacher"] == teacher.id
    record = child.metrics["parity"]
    assert record["kind"] == "compression" and record["status"] == "passed" and record["reference_value"] > 0.5
    assert res.details["student_val"] == record["value"]
    probs = load_predictor(st, child).predict_proba([np.full((48, 48, 3), 120, np.uint8)] * 2)
    assert probs.shape == (2, 2)


def test_distill_bad_input(st: Store) -> None:
    with pytest.raises(ValidationError, match="method"):
        extract(st, "blobs-probe", "distill", {"student": "lite0-48", "method": "probe"})
    with pytest.raises(ValidationError, match="student"):
        extract(st, "blobs-probe", "distill", {})
    with pytest.raises(ConfigError, match=r"'blobs-probe' is an L2 model .*start from an L0 or L1"):
        extract(st, "blobs-probe", "distill", {"student": "blobs-probe"})
    onnx = export_model(st, "blobs-probe", "onnx", name="blobs-probe-onnx").model
    with pytest.raises(ConfigError, match="use a tuned L2"):
        extract(st, onnx.id, "distill", {"student": "lite0-48"})


def test_compression_record_threshold() -> None:
    from modelfab.compress.parity import compression_record

    ok = compression_record("auroc", 0.86, 0.90, "d@1:val", max_drop=0.05)
    bad = compression_record("auroc", 0.80, 0.90, "d@1:val", max_drop=0.05)
    assert ok["status"] == "passed" and bad["status"] == "failed" and "limit -0.05" in bad["reason"]
