"""Causal-LM continued pretraining with LoRA (PEFT) for a small LM: next-token loss on raw texts.

LoRA adapters (rank ``lora_rank``, default 8) go on every linear layer except the output head
(PEFT's ``all-linear``); at the end they are merged, so the L1 is a plain model of the base's
architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from modelfab.adapt.config import AdaptConfig
from modelfab.core.optional import import_optional


class CausalLMObjective:
    """Next-token prediction on unlabeled texts through LoRA adapters."""

    def __init__(self, backbone: Any, texts: Sequence[str], cfg: AdaptConfig):
        peft = import_optional("peft", "peft", "lm")
        self.backbone, self.cfg = backbone, cfg
        self.texts = [str(t) for t in texts]
        rank = cfg.lora_rank or 8
        torch.manual_seed(cfg.seed)  # reproducible adapter initialisation
        lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
        self.net: nn.Module = peft.get_peft_model(backbone.module, lora)

    def build_cache(self) -> None:
        return None

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.net.train()

    def step_loss(self, step: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 7919)
        idx = torch.randperm(len(self.texts), generator=gen)[: min(self.cfg.batch_size, len(self.texts))]
        batch = self.backbone.preprocess([self.texts[i] for i in idx.tolist()])
        ids = batch["input_ids"][:, : self.cfg.max_length]
        mask = batch["attention_mask"][:, : self.cfg.max_length]
        labels = ids.masked_fill(mask == 0, -100)
        return self.net(input_ids=ids, attention_mask=mask, labels=labels).loss

    def after_step(self, step: int) -> None:
        return None

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def finalize(self) -> Any:
        merged = self.net.merge_and_unload()  # type: ignore[operator]
        merged.eval()
        self.backbone.module = merged
        return self.backbone
