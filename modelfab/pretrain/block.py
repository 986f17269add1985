"""One transformer block with a switchable norm placement.

- ``pre``:      ``h = h + ATTN(N(h))``; ``h = h + MLP(N(h))``
- ``sandwich``: ``h = h + N_post(ATTN(N_pre(h)))``; same for the MLP; post gains start at 1
- ``dssn``:     sandwich with post gains ``c_attn/sqrt(L)`` and ``c_mlp/sqrt(L)`` (Pangu Ultra §2)

The residual stream itself is never normalised; the model applies one final norm before the head.
"""

from __future__ import annotations

import torch
from torch import nn

from modelfab.pretrain.attention import (
    CausalSelfAttention,
    KVCache,
    MultiHeadLatentAttention,
    build_attention,
)
from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.ffn import SwiGLU
from modelfab.pretrain.moe import MoE
from modelfab.pretrain.norm import RMSNorm, dssn_gain


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, use_moe: bool = False) -> None:
        super().__init__()
        d = cfg.d_model
        self.attn: CausalSelfAttention | MultiHeadLatentAttention = build_attention(cfg, layer_idx)
        self.ffn: nn.Module = MoE(d, cfg.moe) if use_moe else SwiGLU(d, cfg.dense_hidden)
        self.pre_attn = RMSNorm(d, cfg.norm_eps)
        self.pre_mlp = RMSNorm(d, cfg.norm_eps)
        self.post_attn: RMSNorm | None = None
        self.post_mlp: RMSNorm | None = None
        if cfg.norm != "pre":
            dssn = cfg.norm == "dssn"
            g_attn = dssn_gain(cfg.dssn_c_attn, cfg.n_layers) if dssn else 1.0
            g_mlp = dssn_gain(cfg.dssn_c_mlp, cfg.n_layers) if dssn else 1.0
            self.post_attn = RMSNorm(d, cfg.norm_eps, init=g_attn)
            self.post_mlp = RMSNorm(d, cfg.norm_eps, init=g_mlp)

    def attn_branch(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        a = self.attn(self.pre_attn(x), start_pos, cache)  # (B, T, C)
        return a if self.post_attn is None else self.post_attn(a)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        m = self.ffn(self.pre_mlp(x))  # (B, T, C)
        return m if self.post_mlp is None else self.post_mlp(m)

    def forward(self, x: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn_branch(x, start_pos, cache)
        return x + self.mlp_branch(x)
