"""DSSN properties (PANGU_TECHNIQUES §1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modelfab.pretrain.block import Block
from modelfab.pretrain.config import ModelConfig


def _cfg(norm: str, n_layers: int, d: int = 32) -> ModelConfig:
    return ModelConfig(d_model=d, n_heads=4, n_layers=n_layers, norm=norm, vocab_size=64)  # type: ignore[arg-type]


def _random_stack(norm: str, n_layers: int, seed: int = 0) -> nn.ModuleList:
    """Blocks whose sublayer weights are N(0, 1/fan_in): each sublayer output has O(1) RMS."""
    torch.manual_seed(seed)
    cfg = _cfg(norm, n_layers)
    blocks = nn.ModuleList(Block(cfg, i) for i in range(n_layers))
    for m in blocks.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_features))
    return blocks


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


@pytest.mark.parametrize("n_layers", [1, 4, 94])
def test_dssn_init_gains(n_layers: int) -> None:
    cfg = _cfg("dssn", n_layers)
    block = Block(cfg, 0)
    assert block.post_attn is not None and block.post_mlp is not None
    assert torch.equal(block.post_attn.weight, torch.full((32,), 0.283 / math.sqrt(n_layers)))
    assert torch.equal(block.post_mlp.weight, torch.full((32,), 0.432 / math.sqrt(n_layers)))
    assert torch.equal(block.pre_attn.weight, torch.ones(32))
    assert torch.equal(block.pre_mlp.weight, torch.ones(32))


def test_sandwich_gains_one_and_pre_ln_has_no_post_norm() -> None:
    sandwich = Block(_cfg("sandwich", 8), 0)
    assert sandwich.post_attn is not None and torch.equal(sandwich.post_attn.weight, torch.ones(32))
    pre = Block(_cfg("pre", 8), 0)
    assert pre.post_attn is None and pre.post_mlp is None


@pytest.mark.parametrize("scale", [0.3, 1.0, 5.0])
def test_branch_rms_is_c_over_sqrt_l_whatever_the_weights(scale: float) -> None:
    torch.manual_seed(1)
    n_layers = 16
    block = Block(_cfg("dssn", n_layers), 0)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale * (1 + torch.rand(()) * 3))
    x = torch.randn(2, 10, 32) * 3
    attn = block.attn_branch(x)
    mlp = block.mlp_branch(x)
    per_token_attn = attn.pow(2).mean(-1).sqrt()  # (B, T)
    per_token_mlp = mlp.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(per_token_attn, torch.full_like(per_token_attn, 0.283 / 4), rtol=2e-3, atol=0)
    torch.testing.assert_close(per_token_mlp, torch.full_like(per_token_mlp, 0.432 / 4), rtol=2e-3, atol=0)


def _final_rms(norm: str, n_layers: int) -> float:
    blocks = _random_stack(norm, n_layers)
    torch.manual_seed(123)
    x = torch.randn(1, 16, 32)
    with torch.no_grad():
        for b in blocks:
            x = b(x)
    return _rms(x)


@pytest.mark.timeout(120)
def test_residual_rms_flat_with_dssn_grows_with_pre_ln() -> None:
    dssn = [_final_rms("dssn", n) for n in (16, 64, 256)]
    pre = [_final_rms("pre", n) for n in (16, 64, 256)]
    # DSSN adds sum_l (c_a^2 + c_m^2)/L: bounded, independent of L.
    assert max(dssn) / min(dssn) < 1.3, dssn
    # Pre-LN adds O(1) per branch: RMS grows ~sqrt(L); from L=16 to 256 that is ~4x.
    assert pre[1] / pre[0] > 1.5 and pre[2] / pre[1] > 1.5, pre
    assert 2.5 < pre[2] / pre[0] < 6.0, pre


def _input_grad_norm(norm: str, n_layers: int) -> float:
    blocks = _random_stack(norm, n_layers)
    torch.manual_seed(7)
    x = torch.randn(1, 16, 32, requires_grad=True)
    r = torch.randn(1, 16, 32)
    h = x
    for b in blocks:
        h = b(h)
    (h * r).sum().backward()
    assert x.grad is not None
    return float(x.grad.norm())


@pytest.mark.timeout(120)
def test_input_gradient_bounded_in_depth_with_dssn() -> None:
    g = [_input_grad_norm("dssn", n) for n in (16, 64, 256)]
    assert all(math.isfinite(v) for v in g)
    assert max(g) / min(g) < 2.0, g
