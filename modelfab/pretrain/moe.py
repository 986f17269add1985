"""Mixture-of-experts feed-forward with dropless dispatch and shared experts.

Dropless: every (token, expert) assignment is computed; there is no capacity factor and no
padding.  Assignments are sorted by expert, each expert runs once on its contiguous slice (also on
an empty slice, so every expert's parameters get a gradient, zero if unused), and the gated
outputs are scattered back with ``index_add``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from modelfab.pretrain.config import MoEConfig
from modelfab.pretrain.ffn import SwiGLU
from modelfab.pretrain.router import Router, ep_group_loss, imbalance_score, switch_loss


def dropless_dispatch(
    x: torch.Tensor, indices: torch.Tensor, gates: torch.Tensor, experts: nn.ModuleList
) -> torch.Tensor:
    """``out_t = sum_k gate_tk expert_{idx_tk}(x_t)`` for x (N, C), indices/gates (N, K)."""
    K = indices.shape[1]
    flat = indices.flatten()  # (N*K,)
    order = flat.argsort(stable=True)
    token = order // K  # source token of each sorted assignment
    counts = torch.bincount(flat, minlength=len(experts)).tolist()
    chunks = x[token].split(counts)  # one (n_e, C) slice per expert
    ys = torch.cat([expert(chunk) for expert, chunk in zip(experts, chunks, strict=True)])  # (N*K, C)
    ys = ys * gates.flatten()[order, None].to(ys.dtype)
    return torch.zeros_like(x).index_add_(0, token, ys.to(x.dtype))


class MoE(nn.Module):
    """Routed experts (top-K) plus ``n_shared`` always-on experts (fused into one wider SwiGLU).

    After each forward, ``aux_loss`` holds the balancing loss and ``counts``/``indices`` the routing.
    """

    def __init__(self, d_model: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.router = Router(d_model, cfg)
        self.experts = nn.ModuleList(SwiGLU(d_model, cfg.expert_hidden) for _ in range(cfg.n_experts))
        self.shared = SwiGLU(d_model, cfg.expert_hidden * cfg.n_shared) if cfg.n_shared else None
        self.ep_group: dist.ProcessGroup | None = None  # set by modelfab.pretrain.distributed
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.counts: torch.Tensor = torch.zeros(cfg.n_experts)
        self.indices: torch.Tensor = torch.zeros(0, cfg.top_k, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        r = self.router(flat)
        out = dropless_dispatch(flat, r.indices, r.gates, self.experts)
        if self.shared is not None:
            out = out + self.shared(flat)
        self.counts, self.indices = r.counts, r.indices.detach()
        if self.cfg.balance == "switch":
            self.aux_loss = switch_loss(r.probs, r.counts, self.cfg.alpha)
        elif self.cfg.balance == "ep_group":
            self.aux_loss = ep_group_loss(r.probs, r.counts, self.cfg.alpha, self.ep_group)
        else:
            self.aux_loss = r.probs.new_zeros(())
        return out.view(B, T, C)

    def imbalance(self) -> float:
        """Device imbalance score of the last routing over ``cfg.devices`` equal expert groups."""
        return imbalance_score(self.indices, self.cfg.n_experts, self.cfg.devices)
