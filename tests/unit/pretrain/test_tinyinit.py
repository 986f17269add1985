"""TinyInit and the other init schemes (PANGU_TECHNIQUES §2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modelfab.pretrain.config import ModelConfig, MoEConfig
from modelfab.pretrain.init import init_stds, small_init_std, tiny_init_std
from modelfab.pretrain.model import Transformer


def test_tiny_init_helper_matches_published_example() -> None:
    assert tiny_init_std(12288, 94) == pytest.approx(6.579e-4, rel=1e-3)
    assert tiny_init_std(64, 8) == math.sqrt(1 / (2 * 64 * 8))
    assert small_init_std(100) == math.sqrt(2 / 500)


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_tiny_init_empirical_std_of_every_linear(attention: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=128,
        n_heads=4,
        n_layers=3,
        vocab_size=256,
        init="tiny",
        attention=attention,  # type: ignore[arg-type]
        ffn="moe",
        moe=MoEConfig(n_experts=4, top_k=2, expert_hidden=128),
        mtp_depth=1,
        kv_latent=64,
        q_latent=64,
        rope_dim=32,
    )
    model = Transformer(cfg)
    want = math.sqrt(1 / (2 * 128 * 3))
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.weight.numel() >= 4096:
            std = float(m.weight.detach().std())
            assert abs(std / want - 1) < 0.02, (name, std, want)
            assert abs(float(m.weight.detach().mean())) < 3 * want / math.sqrt(m.weight.numel())
            checked += 1
    assert checked > 20  # attention, experts, shared, head, MTP projection ...
    assert abs(float(model.tok_emb.weight.detach().std()) - 0.5) / 0.5 < 0.02
    # norms keep their scheme's gains
    assert torch.equal(model.norm_f.weight, torch.ones(128))


@pytest.mark.parametrize(("kind", "expected"), [("default", 0.02), ("small", math.sqrt(2 / (5 * 128)))])
def test_default_and_small_init(kind: str, expected: float) -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=128, n_heads=4, n_layers=2, vocab_size=256, init=kind))  # type: ignore[arg-type]
    assert init_stds(kind, 128, 2) == (expected, expected)  # type: ignore[arg-type]
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert abs(float(m.weight.detach().std()) / expected - 1) < 0.02
    assert abs(float(model.tok_emb.weight.detach().std()) / expected - 1) < 0.02
