"""Configuration of an L1 adaptation run (one dataclass; every field documents a CLI option)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from modelfab.adapt.augment import AugmentConfig
from modelfab.core.errors import ConfigError


@dataclass
class AdaptConfig:
    """Continued self-supervised training of a backbone on unlabeled data."""

    objective: Literal["auto", "simclr", "byol", "simcse", "clm"] = "auto"
    """Vision: simclr (contrastive) or byol (self-distillation, EMA teacher); text: simcse; lm: clm
    (next-token loss through LoRA) or simcse. auto: simclr / simcse / clm by modality."""
    steps: int = 300
    """Optimizer steps (the run may stop earlier at ``time_budget_s``)."""
    batch_size: int = 64
    """Items per step (two views each)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, linear warm-up then cosine decay)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    temperature: float = 0.2
    """NT-Xent temperature (simclr; simcse uses 0.05 when left at 0.2)."""
    train_from: int | None = None
    """Vision: index of the first trainable block; earlier blocks stay frozen (None: the last two stages)."""
    cache_views: int = 4
    """Vision: augmented views per image whose frozen early-stage outputs are cached (0: no cache,
    augment and run the frozen stages every step)."""
    lora_rank: int = 0
    """>0: train LoRA adapters of this rank on the trainable blocks' 1x1 convs instead of their weights."""
    resolution: int | None = None
    """Vision: training resolution in pixels (None: the backbone's input size)."""
    max_items: int | None = None
    """Use at most this many training items (seeded subset)."""
    split: str | None = "train"
    """Dataset split used (labels are ignored); None: every item."""
    ema: float = 0.99
    """byol: EMA rate of the teacher."""
    max_length: int = 64
    """Text: tokens per item during training."""
    checkpoint_every: int = 50
    """Write a checkpoint every N steps (and at the end)."""
    time_budget_s: float | None = None
    """Stop (cleanly, with a checkpoint) once training time reaches this many seconds."""
    seed: int = 0
    """Seed of the subset, the views and the step order."""
    threads: int | None = None
    """torch threads (None: leave torch's default)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Vision augmentation policy."""

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, "steps", "must be >= 1"),
            (self.batch_size >= 4, "batch_size", "must be >= 4 (contrastive losses need negatives)"),
            (self.lr > 0, "lr", "must be > 0"),
            (self.cache_views >= 0 and self.cache_views != 1, "cache_views", "must be 0 or >= 2"),
            (self.lora_rank >= 0, "lora_rank", "must be >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1"),
            (0.0 < self.ema < 1.0, "ema", "must be in (0, 1)"),
            (self.resolution is None or 32 <= self.resolution <= 1024, "resolution", "must be within 32..1024"),
            (self.objective in ("auto", "simclr", "byol", "simcse", "clm"), "objective",
             "must be auto, simclr, byol, simcse or clm"),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise ConfigError(f"{name}: {msg}, got {getattr(self, name)!r}")
        if isinstance(self.augment, dict):
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
            self.augment = AugmentConfig(**fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """Fields that must match for ``--resume`` (budget, checkpoint cadence and threads may change)."""
        d = self.to_dict()
        for key in ("time_budget_s", "checkpoint_every", "threads", "steps"):
            d.pop(key)
        return dict(json.loads(json.dumps(d)))  # tuples -> lists, as read back from a checkpoint
