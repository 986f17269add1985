"""Where tuning runs: cfg.device (auto / cpu / cuda), bf16 autocast on CUDA, the model back on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelfab.core.devices import placed, resolve_device, to_device
from modelfab.core.errors import DataError
from modelfab.store.store import Store
from modelfab.tune import TuneConfig
from modelfab.tune.api import tune
from modelfab.tune.load import load_scenario
from tests.tune_fixtures import tiny_text_store


def test_resolve_device_and_move() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="no CUDA device"):
            resolve_device("cuda")
    batch = {"ids": torch.zeros(2, 3), "extra": [torch.ones(1)], "name": "x"}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["name"] == "x" and torch.equal(moved["extra"][0], torch.ones(1))


def test_config_rejects_unknown_device() -> None:
    with pytest.raises(ValueError):
        TuneConfig(device="tpu")




def test_cpu_training_records_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    from modelfab.store.models import model_card

    store = tiny_text_store(tmp_path / "home", tmp_path)
    out = tune(store, base="tiny-bert", data="reviews", name="rev-cpu",
               cfg=TuneConfig(method="full", epochs=1, batch_size=8, device="cpu"))
    assert model_card(store, out.model.id)["training"]["device"] == "cpu"


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_bf16_autocast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    from modelfab.store.models import model_card

    store = tiny_text_store(tmp_path / "home", tmp_path)
    out = tune(store, base="tiny-bert", data="reviews", name="rev-gpu",
               cfg=TuneConfig(method="full", epochs=3, batch_size=8, device="cuda", mixed_precision=True))
    card = model_card(store, out.model.id)
    assert card["training"]["device"].startswith("cuda")
    history = card["training"]["history"]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    model = load_scenario(store, out.model.id)
    probs = model.predict_proba(["good product", "bad review"])
    assert probs.device.type == "cpu" and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)


def test_placed_restores_the_module_after_an_error() -> None:
    from torch import nn

    layer = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"), placed(layer, torch.device("cpu")):
        raise RuntimeError("boom")
    assert layer.weight.device.type == "cpu"
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.inference_mode(), placed(layer, target):  # moved inside inference mode, as feature passes do
        assert layer.weight.device.type == target.type
    assert layer.weight.device.type == "cpu"
    layer.weight.requires_grad_(True)  # still an ordinary tensor: training can follow


def _defect_store(tmp_path: Path) -> Store:
    from modelfab.data import import_image_folder
    from modelfab.data.tasks import TaskView
    from tests.tune_fixtures import tiny_image_store, write_blobs

    store = tiny_image_store(tmp_path / "home", tmp_path)
    task = TaskView(type="binary", classes=["ok", "ng"], positive="ng")
    import_image_folder(store, write_blobs(tmp_path / "d", seed=1), "blobs-defect", tasks={"defect": task.model_dump()})
    return store


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_frozen_features_and_prior_match_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe features and the anomaly prior's patch pass run on CUDA (cfg.device); the L2 they give is
    the CPU's to float tolerance, and the backbone is back on the CPU afterwards."""
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    from modelfab.tune.api import feature_getter, load_base

    store = _defect_store(tmp_path)
    backbone, base = load_base(store, "lite0-64", None)
    rows = store.version_items("blobs-defect")
    on_gpu = feature_getter(store, backbone, base, "image", "cuda")(rows)  # computed on CUDA, cached
    assert on_gpu.device.type == "cpu" and next(backbone.module.parameters()).device.type == "cpu"
    cpu_store = _defect_store(tmp_path / "cpu")
    cpu_bb, cpu_base = load_base(cpu_store, "lite0-64", None)
    on_cpu = feature_getter(cpu_store, cpu_bb, cpu_base, "image", "cpu")(cpu_store.version_items("blobs-defect"))
    # cuDNN convolutions use TF32 by default: agreement to 1% of the features' scale, not bitwise
    gap = float((on_gpu - on_cpu).abs().max() / on_cpu.abs().max())
    assert gap < 1e-2, gap
    outs = {}
    for dev, st in (("cuda", store), ("cpu", cpu_store)):
        cfg = TuneConfig(prior="gaussian", prior_dim=16, device=dev, prior_trim=0.1, prior_weight=0.5)
        res = tune(st, base="lite0-64", data="blobs-defect", name=f"prior-{dev}", cfg=cfg)
        outs[dev] = res.trained.card["scenario"]["prior"]
    assert outs["cuda"]["val_auroc_prior_alone"] > 0.9
    assert abs(outs["cuda"]["val_auroc_prior_alone"] - outs["cpu"]["val_auroc_prior_alone"]) < 0.05
