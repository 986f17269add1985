"""Text adaptation: unsupervised SimCSE (the same sentence twice, dropout as the augmentation).

Works for any trainable text backbone whose ``embed`` is differentiable (MiniLM, local encoders).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from modelfab.adapt.config import AdaptConfig
from modelfab.adapt.losses import nt_xent
from modelfab.core.errors import ConfigError


class TextObjective:
    """SimCSE over a list of unlabeled texts; trains every parameter of ``backbone.module``."""

    def __init__(self, backbone: Any, texts: Sequence[str], cfg: AdaptConfig):
        if getattr(backbone, "frozen", False):
            raise ConfigError(f"{backbone.name} is a frozen (embed-only) backbone and cannot be adapted")
        self.backbone, self.cfg = backbone, cfg
        self.texts = [str(t) for t in texts]
        self.temperature = 0.05 if cfg.temperature == 0.2 else cfg.temperature
        self.net: nn.Module = backbone.module
        self.net.requires_grad_(True)
        if hasattr(self.net, "max_seq_length"):
            self.net.max_seq_length = cfg.max_length

    def build_cache(self) -> None:
        return None

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.net.train()  # dropout on: it makes the two views differ

    def step_loss(self, step: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 7919)
        idx = torch.randperm(len(self.texts), generator=gen)[: min(self.cfg.batch_size, len(self.texts))]
        batch = self.backbone.preprocess([self.texts[i] for i in idx.tolist()])
        batch = {k: v[:, : self.cfg.max_length] if v.ndim == 2 else v for k, v in batch.items()}
        return nt_xent(self.backbone.embed(batch), self.backbone.embed(batch), self.temperature)

    def after_step(self, step: int) -> None:
        return None

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def finalize(self) -> Any:
        if hasattr(self.net, "max_seq_length"):
            self.net.max_seq_length = self.backbone.input_spec.max_length
        self.net.eval()
        return self.backbone
