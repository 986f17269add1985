"""Attention: MLA properties (PANGU_TECHNIQUES §4) and KV-cached generation for MHA/GQA/MLA."""

from __future__ import annotations

import pytest
import torch

from modelfab.pretrain.attention import KVCache, MultiHeadLatentAttention, kv_cache_elems_per_token
from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.model import Transformer


def _mla_cfg() -> ModelConfig:
    return ModelConfig(
        d_model=32,
        n_heads=4,
        n_layers=2,
        vocab_size=64,
        attention="mla",
        kv_latent=12,
        q_latent=20,
        rope_dim=8,
    )


def test_cache_per_token_deepseek_sizes() -> None:
    ds = dict(d_model=7168, n_heads=128, head_dim=128, kv_latent=512, q_latent=1536, rope_dim=64, vocab_size=64)
    assert kv_cache_elems_per_token(ModelConfig(attention="mla", **ds)) == 576  # type: ignore[arg-type]
    assert kv_cache_elems_per_token(ModelConfig(attention="mha", **ds)) == 32768  # type: ignore[arg-type]


def test_mla_cache_holds_only_latent_and_rope_key() -> None:
    torch.manual_seed(0)
    model = Transformer(_mla_cfg()).eval()
    cache = KVCache()
    model(torch.randint(0, 64, (2, 9)), cache=cache)
    assert set(cache.layers[0]) == {"c", "k_r"}
    assert cache.layers[0]["c"].shape == (2, 9, 12) and cache.layers[0]["k_r"].shape == (2, 9, 8)
    assert cache.bytes_per_token() == 4 * 2 * (12 + 8)  # fp32, 2 layers
    assert model.kv_cache_bytes_per_token(bytes_per_elem=4) == 4 * 2 * (12 + 8)


def test_absorbed_form_equals_explicit() -> None:
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(_mla_cfg(), 0)
    x = torch.randn(2, 11, 32)
    explicit = attn(x)
    attn.absorb = True
    absorbed = attn(x)
    torch.testing.assert_close(absorbed, explicit, rtol=1e-5, atol=1e-5)
    # and incrementally, on the cached latent
    cache = KVCache()
    steps = [attn(x[:, :6], 0, cache)] + [attn(x[:, t : t + 1], t, cache) for t in range(6, 11)]
    torch.testing.assert_close(torch.cat(steps, dim=1), explicit, rtol=1e-5, atol=1e-5)


def test_rope_key_identical_across_heads() -> None:
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(_mla_cfg(), 0)
    c, k_r = attn.latents(torch.randn(2, 5, 32), 0)
    keys, _ = attn.expand_keys(c, k_r)  # (B, H, T, Dh + dr)
    rope_part = keys[..., attn.dh :]
    for h in range(1, attn.n_heads):
        assert torch.equal(rope_part[:, h], rope_part[:, 0])
    assert not torch.equal(keys[:, 1, ..., : attn.dh], keys[:, 0, ..., : attn.dh])


@pytest.mark.parametrize("shift", [1, 37, 500])
def test_scores_invariant_to_position_shift(shift: int) -> None:
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(_mla_cfg(), 0)
    x = torch.randn(1, 8, 32)
    torch.testing.assert_close(attn.scores(x, shift), attn.scores(x, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [{"attention": "mha"}, {"attention": "gqa", "n_kv_heads": 2}, {"attention": "mla"}])
def test_kv_cached_decoding_matches_full_forward(kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, **kw)).eval()  # type: ignore[arg-type]
    idx = torch.randint(0, 64, (2, 12))
    full = model(idx).logits
    cache = KVCache()
    parts = [model(idx[:, :5], cache=cache).logits]
    for t in range(5, 12):
        parts.append(model(idx[:, t : t + 1], start_pos=t, cache=cache).logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.generate(idx[:, :3], 8), model.generate(idx[:, :3], 8, use_cache=False))


def test_gqa_cache_is_smaller_than_mha() -> None:
    mha = Transformer(ModelConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64))
    gqa = Transformer(ModelConfig(d_model=32, n_heads=4, n_kv_heads=1, attention="gqa", n_layers=2, vocab_size=64))
    assert mha.kv_cache_bytes_per_token() == 4 * gqa.kv_cache_bytes_per_token()
