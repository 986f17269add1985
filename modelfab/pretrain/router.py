"""Top-K routers and load-balancing losses for the MoE layers.

- ``topk``: softmax over experts, top-K, gates renormalised over the chosen (GShard/Mixtral).
- ``aux_free`` (DeepSeek-V3 §2.1.2): affinity ``s = sigmoid(u . e_i)``; the top-K of ``s + b``
  chooses the experts, the gates are ``s`` of the chosen, normalised; the bias ``b`` only steers
  selection and is moved by ``-/+ gamma`` after each optimizer step for over/under-loaded experts.
- ``moge`` (Pangu Pro MoE §2): N experts in M equal groups, global softmax ``S``, top-K/M inside each
  group, gates are the raw ``S`` values (not renormalised), so every group (device) receives exactly
  K/M assignments per token and the device imbalance score is 0 by construction.

Balancing losses: ``switch`` is ``alpha N sum_i f_i P_i`` over the micro-batch; ``ep_group``
(Pangu Ultra MoE; exact formula unverified, reconstructed as in the spec) counts ``f_i`` over the
whole expert-parallel group by all-reducing the per-expert counts, ``P_i`` stays local.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from modelfab.pretrain.config import MoEConfig


@dataclass
class Routing:
    """The routing of N tokens to K of E experts."""

    indices: torch.Tensor  # (N, K) chosen experts
    gates: torch.Tensor  # (N, K) combine weights
    probs: torch.Tensor  # (N, E) router probabilities (differentiable; the P of the balance loss)
    counts: torch.Tensor  # (E,) assignments per expert (float, no grad)


class Router(nn.Module):
    """Chooses K experts per token according to ``cfg.router``."""

    def __init__(self, d_model: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.kind = cfg.router
        self.n_experts, self.top_k, self.n_groups = cfg.n_experts, cfg.top_k, cfg.n_groups
        self.gamma = cfg.bias_update_rate
        self.proj = nn.Linear(d_model, cfg.n_experts, bias=False)
        # selection bias and the load accumulated since its last update (used by aux_free only)
        self.bias: torch.Tensor
        self.load: torch.Tensor
        self.register_buffer("bias", torch.zeros(cfg.n_experts))
        self.register_buffer("load", torch.zeros(cfg.n_experts))

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.proj(x).float()  # (N, E)
        if self.kind == "topk":
            probs = logits.softmax(-1)
            top = probs.topk(self.top_k, dim=-1)
            indices, gates = top.indices, top.values / top.values.sum(-1, keepdim=True)
        elif self.kind == "aux_free":
            s = torch.sigmoid(logits)  # affinities
            indices = (s + self.bias).topk(self.top_k, dim=-1).indices  # bias steers selection only
            chosen = s.gather(-1, indices)
            gates = chosen / chosen.sum(-1, keepdim=True)
            probs = s / s.sum(-1, keepdim=True)
        else:  # moge
            probs = logits.softmax(-1)  # global softmax S over all experts
            n, per_group, k_group = x.shape[0], self.n_experts // self.n_groups, self.top_k // self.n_groups
            grouped = probs.view(n, self.n_groups, per_group)  # (N, M, E/M)
            top = grouped.topk(k_group, dim=-1)
            offset = torch.arange(self.n_groups, device=x.device)[None, :, None] * per_group
            indices = (top.indices + offset).reshape(n, self.top_k)
            gates = top.values.reshape(n, self.top_k)  # raw S, not renormalised
        counts = torch.bincount(indices.flatten(), minlength=self.n_experts).float()
        if self.kind == "aux_free" and self.training:
            self.load += counts
        return Routing(indices, gates, probs, counts)

    @torch.no_grad()
    def update_bias(self, load: torch.Tensor | None = None) -> None:
        """Aux-loss-free step: ``b_i -= gamma`` if expert i is over the mean load, ``+= gamma`` if under.

        ``load`` defaults to the counts accumulated since the last update (all-reduce them first
        under data parallelism so every rank moves its biases identically).
        """
        if self.kind != "aux_free":
            return
        load = self.load if load is None else load
        self.bias -= self.gamma * torch.sign(load - load.mean())
        self.load.zero_()


def switch_loss(probs: torch.Tensor, counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha N sum_i f_i P_i``: f from ``counts`` (no gradient), P the mean router probability.

    Uniform routing gives alpha; collapse onto one expert (K=1) gives alpha N.
    """
    n = probs.shape[-1]
    counts = counts.detach()
    f = counts / counts.sum().clamp_min(1)
    return alpha * n * (f * probs.mean(0)).sum()


def ep_group_loss(
    probs: torch.Tensor, counts: torch.Tensor, alpha: float, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Switch form with f counted over the expert-parallel group (counts all-reduced over ``group``).

    Without a group (or outside torch.distributed) it equals :func:`switch_loss` on the micro-batch.
    """
    if group is not None and dist.is_available() and dist.is_initialized():
        counts = counts.detach().clone()
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    return switch_loss(probs, counts, alpha)


def imbalance_score(indices: torch.Tensor, n_experts: int, n_groups: int) -> float:
    """``(max_i T_i - min_i T_i) / |X|``: T_i = assignments to device (group) i, |X| = tokens."""
    per_device = F.one_hot(indices.flatten() // (n_experts // n_groups), n_groups).sum(0)
    return float((per_device.max() - per_device.min()).item()) / indices.shape[0]


def load_stats(counts: torch.Tensor) -> dict[str, float]:
    """max/mean load ratio and the coefficient of variation of per-expert counts."""
    mean = counts.float().mean().clamp_min(1e-9)
    return {
        "max_mean_load": float(counts.max() / mean),
        "load_cv": float(counts.float().std(unbiased=False) / mean),
    }
