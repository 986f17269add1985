"""LoRA adapters for 1x1 convolutions and linear layers, merged back into plain layers afterwards.

``W' = W + (alpha / r) * B @ A`` with ``B`` zero-initialised, so training starts at the base model.
Only the adapters train; :func:`merge_lora` folds them in and restores the original layer types,
so the adapted network is again a plain ``nn.Module`` (same architecture as its parent).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LoRAConv1x1(nn.Module):
    """A frozen 1x1 ``nn.Conv2d`` (groups 1) plus a trainable low-rank update."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        super().__init__()
        if base.kernel_size != (1, 1) or base.groups != 1:
            raise ValueError("LoRAConv1x1 wraps only 1x1 convolutions with groups=1")
        self.base = base
        self.base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_channels))
        self.lora_b = nn.Parameter(torch.zeros(base.out_channels, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: Tensor) -> Tensor:  # (N, Cin, H, W) -> (N, Cout, H, W)
        delta = torch.einsum("nchw,rc->nrhw", x, self.lora_a)
        return self.base(x) + self.scale * torch.einsum("nrhw,or->nohw", delta, self.lora_b)

    def merged(self) -> nn.Conv2d:
        with torch.no_grad():
            update = (self.lora_b @ self.lora_a) * self.scale  # (Cout, Cin)
            self.base.weight += update.view_as(self.base.weight)
        self.base.requires_grad_(True)
        return self.base


def add_lora(module: nn.Module, rank: int = 4, alpha: float = 8.0) -> int:
    """Replace every 1x1 conv (groups 1) inside ``module`` with a LoRA wrapper; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1) and child.groups == 1:
            setattr(module, name, LoRAConv1x1(child, rank, alpha))
            count += 1
        elif not isinstance(child, LoRAConv1x1):
            count += add_lora(child, rank, alpha)
    return count


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA wrapper inside ``module`` back into its base conv; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, LoRAConv1x1):
            setattr(module, name, child.merged())
            count += 1
        else:
            count += merge_lora(child)
    return count
