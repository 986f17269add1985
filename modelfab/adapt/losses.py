"""Self-supervised objectives: NT-Xent (SimCLR / SimCSE) and the BYOL regression loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised-temperature cross entropy for two views (N, D) each.

    Each embedding's positive is the other view of the same item; the other 2N - 2 are negatives.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    sim = z @ z.t() / temperature  # (2N, 2N)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """2 - 2 cos(p, t), averaged: the online prediction regresses the (stop-gradient) target."""
    return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)).mean()


def projector(dim_in: int, hidden: int = 512, dim_out: int = 128) -> nn.Sequential:
    """The MLP head on top of the pooled embedding (discarded after adaptation)."""
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim_out))
