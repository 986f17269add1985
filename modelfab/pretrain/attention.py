"""Causal self-attention: MHA / GQA with a KV cache, and Multi-head Latent Attention (MLA).

MLA (DeepSeek-V3 §2.1) caches only the KV latent ``c_KV`` (d_c) and the shared RoPE key ``k_R``
(d_h^R) per token, instead of 2 x heads x head_dim for MHA.  Two mathematically equal forms:
explicit (up-project the latent to per-head keys/values) and absorbed (fold ``W_UK`` into the query
and ``W_UV`` after the attention, so attention runs directly on the cached latent).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.norm import RMSNorm
from modelfab.pretrain.rope import apply_rope, positions, rope_angles


class KVCache:
    """Cached per-layer tensors for incremental decoding; time is dim -2 of every tensor."""

    def __init__(self) -> None:
        self.layers: dict[int, dict[str, torch.Tensor]] = {}

    def update(self, layer: int, **new: torch.Tensor) -> list[torch.Tensor]:
        """Append ``new`` tensors of one layer along time; returns the full cached tensors (same order)."""
        old = self.layers.get(layer)
        full = new if old is None else {k: torch.cat((old[k], v), dim=-2) for k, v in new.items()}
        self.layers[layer] = full
        return [full[k] for k in new]

    @property
    def length(self) -> int:
        """Tokens cached so far."""
        if not self.layers:
            return 0
        first = next(iter(self.layers.values()))
        return next(iter(first.values())).shape[-2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers.values() for t in layer.values())

    def bytes_per_token(self) -> float:
        """Cache bytes per token per sequence, summed over layers."""
        first = next(iter(self.layers.values()))
        batch = next(iter(first.values())).shape[0]
        return self.nbytes() / (batch * self.length)


def causal_mask(t_new: int, t_total: int, device: torch.device) -> torch.Tensor | None:
    """Boolean (T_new, T_total) mask: query i (position past+i) sees keys 0..past+i; None for 1 query."""
    if t_new == 1:
        return None
    past = t_total - t_new
    q = torch.arange(t_new, device=device)[:, None] + past
    k = torch.arange(t_total, device=device)[None, :]
    return k <= q


class CausalSelfAttention(nn.Module):
    """MHA (n_kv_heads == n_heads) or GQA (fewer KV heads shared by groups of query heads), with RoPE."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.dh = cfg.n_heads, cfg.kv_heads, cfg.dim_head
        self.rope_base = cfg.rope_base
        d = cfg.d_model
        self.wq = nn.Linear(d, self.n_heads * self.dh, bias=False)
        self.wk = nn.Linear(d, self.n_kv * self.dh, bias=False)
        self.wv = nn.Linear(d, self.n_kv * self.dh, bias=False)
        self.wo = nn.Linear(self.n_heads * self.dh, d, bias=False)

    def cache_elems_per_token(self) -> int:
        """Cached numbers per token in this layer: K and V for every KV head."""
        return 2 * self.n_kv * self.dh

    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.dh).transpose(1, 2)  # (B, H, T, Dh)
        k = self.wk(x).view(B, T, self.n_kv, self.dh).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.wv(x).view(B, T, self.n_kv, self.dh).transpose(1, 2)  # (B, Hkv, T, Dh)
        cos, sin = rope_angles(positions(start_pos, T, x.device), self.dh, self.rope_base)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k=k, v=v)  # (B, Hkv, S, Dh)
        S = k.shape[-2]
        mask = causal_mask(T, S, x.device)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask if S != T else None,
            is_causal=S == T and T > 1,
            enable_gqa=self.n_kv != self.n_heads,
        )  # (B, H, T, Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.dh))


class MultiHeadLatentAttention(nn.Module):
    """MLA with decoupled RoPE; caches only ``c_KV`` (d_c) and ``k_R`` (d_h^R) per token."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.dh, self.dr = cfg.n_heads, cfg.dim_head, cfg.rope_dim
        self.rope_base = cfg.rope_base
        self.absorb = False  # use the absorbed form (same result, attention on the latent)
        d, dc, dq = cfg.d_model, cfg.kv_latent, cfg.q_latent
        H = self.n_heads
        self.w_dkv = nn.Linear(d, dc, bias=False)  # c_KV = W_DKV h
        self.kv_norm = RMSNorm(dc, cfg.norm_eps)
        self.w_uk = nn.Linear(dc, H * self.dh, bias=False)  # k_C = W_UK c_KV
        self.w_uv = nn.Linear(dc, H * self.dh, bias=False)  # v = W_UV c_KV
        self.w_kr = nn.Linear(d, self.dr, bias=False)  # k_R = RoPE(W_KR h), shared by all heads
        self.w_dq = nn.Linear(d, dq, bias=False)  # c_Q = W_DQ h
        self.q_norm = RMSNorm(dq, cfg.norm_eps)
        self.w_uq = nn.Linear(dq, H * self.dh, bias=False)  # q_C = W_UQ c_Q
        self.w_qr = nn.Linear(dq, H * self.dr, bias=False)  # q_R = RoPE(W_QR c_Q), per head
        self.wo = nn.Linear(H * self.dh, d, bias=False)
        self.scale = 1.0 / math.sqrt(self.dh + self.dr)

    def cache_elems_per_token(self) -> int:
        """Cached numbers per token in this layer: d_c + d_h^R."""
        return self.w_dkv.out_features + self.dr

    def latents(self, x: torch.Tensor, start_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What is cached: c_KV (B, T, d_c) and the roped shared key k_R (B, T, d_h^R)."""
        T = x.shape[1]
        cos, sin = rope_angles(positions(start_pos, T, x.device), self.dr, self.rope_base)
        return self.kv_norm(self.w_dkv(x)), apply_rope(self.w_kr(x), cos, sin)

    def queries(self, x: torch.Tensor, start_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q_C (B, H, T, Dh) and the roped q_R (B, H, T, d_h^R)."""
        B, T, _ = x.shape
        cq = self.q_norm(self.w_dq(x))  # (B, T, d'_c)
        q_c = self.w_uq(cq).view(B, T, self.n_heads, self.dh).transpose(1, 2)
        q_r = self.w_qr(cq).view(B, T, self.n_heads, self.dr).transpose(1, 2)
        cos, sin = rope_angles(positions(start_pos, T, x.device), self.dr, self.rope_base)
        return q_c, apply_rope(q_r, cos, sin)

    def expand_keys(self, c: torch.Tensor, k_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys [k_C_i ; k_R] (B, H, S, Dh + d_h^R) and values (B, H, S, Dh) from the cache."""
        B, S, _ = c.shape
        k_c = self.w_uk(c).view(B, S, self.n_heads, self.dh).transpose(1, 2)
        v = self.w_uv(c).view(B, S, self.n_heads, self.dh).transpose(1, 2)
        k_rh = k_r[:, None].expand(B, self.n_heads, S, self.dr)
        return torch.cat((k_c, k_rh), dim=-1), v

    def scores(self, x: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """Pre-softmax attention logits (B, H, T, T) of the explicit form (no mask)."""
        c, k_r = self.latents(x, start_pos)
        q_c, q_r = self.queries(x, start_pos)
        k, _ = self.expand_keys(c, k_r)
        return torch.cat((q_c, q_r), dim=-1) @ k.transpose(-1, -2) * self.scale

    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        c, k_r = self.latents(x, start_pos)  # (B, T, d_c), (B, T, d_h^R)
        if cache is not None:
            c, k_r = cache.update(self.layer_idx, c=c, k_r=k_r)  # (B, S, .)
        S = c.shape[1]
        q_c, q_r = self.queries(x, start_pos)
        mask = causal_mask(T, S, x.device)
        if self.absorb:
            y = self._absorbed(q_c, q_r, c, k_r, mask)
        else:
            k, v = self.expand_keys(c, k_r)
            q = torch.cat((q_c, q_r), dim=-1)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask if S != T else None, is_causal=S == T and T > 1, scale=self.scale
            )  # (B, H, T, Dh)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.dh))

    def _absorbed(
        self,
        q_c: torch.Tensor,
        q_r: torch.Tensor,
        c: torch.Tensor,
        k_r: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        H, dh, dc = self.n_heads, self.dh, c.shape[-1]
        w_uk = self.w_uk.weight.view(H, dh, dc)
        w_uv = self.w_uv.weight.view(H, dh, dc)
        q_lat = torch.einsum("bhtd,hdc->bhtc", q_c, w_uk)  # (B, H, T, d_c): q_C . W_UK
        att = q_lat @ c[:, None].transpose(-1, -2) + q_r @ k_r[:, None].transpose(-1, -2)  # (B, H, T, S)
        att = att * self.scale
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        o_lat = att.softmax(-1) @ c[:, None]  # (B, H, T, d_c)
        return torch.einsum("bhtc,hdc->bhtd", o_lat, w_uv)  # (B, H, T, Dh)


def kv_cache_elems_per_token(cfg: ModelConfig) -> int:
    """Cached numbers per token per layer implied by a config (no weights built)."""
    if cfg.attention == "mla":
        return cfg.kv_latent + cfg.rope_dim
    return 2 * cfg.kv_heads * cfg.dim_head


def build_attention(cfg: ModelConfig, layer_idx: int) -> CausalSelfAttention | MultiHeadLatentAttention:
    """The attention module selected by ``cfg.attention``."""
    if cfg.attention == "mla":
        return MultiHeadLatentAttention(cfg, layer_idx)
    return CausalSelfAttention(cfg, layer_idx)
