"""Where tuning runs: cfg.device (auto / cpu / cuda), bf16 autocast on CUDA, the model back on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelfab.core.errors import DataError
from modelfab.tune import TuneConfig
from modelfab.tune.api import tune
from modelfab.tune.load import load_scenario
from modelfab.tune.train import resolve_device, to_device
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
