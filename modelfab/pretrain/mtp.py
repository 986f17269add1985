"""Multi-Token Prediction (DeepSeek-V3 §2.2).

Depth-k module: ``h'_k = M_k [RMSNorm(h_{k-1}); RMSNorm(Emb(t_{i+k}))]`` (M_k: 2d -> d), then one
transformer block; the embedding and the output head are the main model's (passed in, never
copied, so they are the same parameters).  The depth-k prediction at position i is token
``t_{i+k+1}``; ``L_MTP = (lambda / D) sum_k CE_k``.  The MTP blocks use a dense SwiGLU FFN and a
final RMSNorm of their own before the shared head (a reconstruction; the report shares only the
embedding and head).  Dropping the module at inference leaves the main logits unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelfab.pretrain.block import Block
from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.norm import RMSNorm


class MTPModule(nn.Module):
    def __init__(self, cfg: ModelConfig, depth: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_h = RMSNorm(d, cfg.norm_eps)
        self.norm_e = RMSNorm(d, cfg.norm_eps)
        self.proj = nn.Linear(2 * d, d, bias=False)  # M_k
        self.block = Block(cfg, layer_idx=cfg.n_layers + depth - 1, use_moe=False)
        self.out_norm = RMSNorm(d, cfg.norm_eps)

    def forward(self, h_prev: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.proj(torch.cat((self.norm_h(h_prev), self.norm_e(emb)), dim=-1))  # (B, T-k, C)
        return self.block(h)


class MTP(nn.Module):
    """D sequential depth modules sharing the main embedding and head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.lam = cfg.mtp_lambda
        self.depths = nn.ModuleList(MTPModule(cfg, k) for k in range(1, cfg.mtp_depth + 1))

    def forward(self, h: torch.Tensor, idx: torch.Tensor, embed: nn.Embedding, head: nn.Linear) -> list[torch.Tensor]:
        """Logits of each depth k: (B, T-k, V); h (B, T, C) is the main trunk's last hidden state."""
        T = idx.shape[1]
        out: list[torch.Tensor] = []
        h_prev = h
        modules: list[MTPModule] = [m for m in self.depths if isinstance(m, MTPModule)]
        for k, module in enumerate(modules, start=1):
            if T - k < 1:
                break
            h_prev = module(h_prev[:, : T - k], embed(idx[:, k:]))  # (B, T-k, C)
            out.append(head(module.out_norm(h_prev)))
        return out

    def loss(self, logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """``(lambda / D) sum_k CE_k`` with the depth-k target of position i being ``targets[i + k]``."""
        ces = [
            F.cross_entropy(lg.flatten(0, 1).float(), targets[:, k:].flatten(), ignore_index=-1)
            for k, lg in enumerate(logits, start=1)
        ]
        return self.lam * torch.stack(ces).sum() / len(self.depths)
