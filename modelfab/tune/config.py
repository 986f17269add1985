"""Typed configuration of a tune run (validated at the edge, saved with the model)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskKind = Literal["image-classification", "image-defect", "text-classification"]
Method = Literal["probe", "lora", "partial", "full"]


class TuneConfig(BaseModel):
    """How to train an L2 scenario model from an L0/L1 base."""

    model_config = ConfigDict(extra="forbid")

    task: TaskKind | None = None
    """Task kind; default from the data: images + two classes -> image-defect."""
    labels: str | None = None
    """Label view (task) of the dataset version, e.g. elpv-defect; default its first one."""
    method: Method = "probe"
    """probe (frozen features), lora (PEFT adapters), partial (last blocks), full."""
    shots: int | None = Field(default=None, ge=1)
    """Draw this many labeled train items per class (seeded); default all train labels."""
    seed: int = 0
    """Seed of the few-shot draw, the initialisation and the augmentations."""
    head: Literal["linear", "mlp"] = "linear"
    """Task head on the embedding."""
    hidden: int = Field(default=256, ge=8)
    """Hidden width of the MLP head."""
    epochs: int = Field(default=15, ge=1)
    """Maximum epochs (probe: full-batch steps x 20)."""
    lr: float = Field(default=1e-3, gt=0)
    """Learning rate of the head (backbone parameters use lr * backbone_lr_scale)."""
    backbone_lr_scale: float = Field(default=0.3, gt=0)
    """Backbone learning rate relative to the head's (lora, partial, full)."""
    weight_decay: float = Field(default=1e-4, ge=0)
    """AdamW weight decay."""
    batch_size: int = Field(default=16, ge=1)
    """Mini-batch size (lora, partial, full)."""
    lora_rank: int = Field(default=4, ge=1)
    """LoRA rank on the 1x1 convolutions and linear layers."""
    lora_alpha: int = Field(default=8, gt=0)
    """LoRA scaling numerator (scale = alpha / rank)."""
    partial_blocks: int = Field(default=2, ge=1)
    """partial: train the last k blocks of the backbone (and what follows them)."""
    image_size: int | None = Field(default=None, ge=32, le=1024)
    """Vision input side; default the base's native size (lower it to go faster)."""
    head_init: Literal["random", "probe"] = "random"
    """lora/partial/full: start the task head at random, or from the probe fitted on the frozen features
    first (linear probing, then fine-tuning: the backbone is not pulled by a random head early on)."""
    augment: Literal["none", "light", "strong"] = "light"
    """Augmentation policy for trained backbones (flips, brightness/contrast, noise)."""
    class_weight: Literal["balanced", "none"] = "balanced"
    """Class weighting of the loss (balanced: inverse frequency)."""
    patience: int = Field(default=4, ge=1)
    """Early stopping: epochs without a better validation loss."""
    target_recall: float = Field(default=0.95, gt=0, le=1)
    """image-defect: the operating threshold reaches this recall on the validation split."""
    val_max: int = Field(default=128, ge=8)
    """Validation items used for the per-epoch early-stopping loss (all of them set the threshold)."""
    max_seconds: float | None = Field(default=None, gt=0)
    """Stop training after this many seconds (the best state so far is kept)."""
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    """Where lora/partial/full train: auto (CUDA when available), cpu, cuda or cuda:N."""
    mixed_precision: bool = False
    """bf16 autocast for forward passes on CUDA (ignored on the CPU).  Off by default: for the
    zoo's small convnets it was slower than fp32 on an H200 (bench/gpu.py, docs/benchmarks.md)."""

    prior: Literal["none", "gaussian"] = "none"
    """image-defect with the probe method: add an anomaly prior, a per-location Gaussian of the base's
    frozen patch features fitted on the unlabeled train pool and fused with the probe (modelfab.tune.prior)."""
    prior_layers: list[str] = Field(default_factory=lambda: ["block4", "block10", "block14"])
    """Backbone maps the prior reads (joined at the finest map's grid)."""
    prior_dim: int = Field(default=64, ge=4, le=512)
    """Seeded random projection of the joined channels (the stored state is locations x dim^2 floats)."""
    prior_trim: float | None = Field(default=None, ge=0.0, lt=1.0)
    """Fraction of the most anomalous pool images dropped before the refit; default: chosen on validation."""
    prior_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    """Weight of the probe in the fused score (1 - it goes to the prior); default: chosen on validation."""
    prior_shrinkage: float = Field(default=0.1, ge=0.0, le=1.0)
    """Covariance shrinkage towards a scaled identity."""
    prior_max_images: int = Field(default=2000, ge=8)
    """At most this many pool images (a seeded subsample beyond it)."""

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        if self.method == "probe" and self.augment == "strong":
            raise ValueError("augment: probe trains on cached frozen features; augmentation does not apply")
        if self.prior != "none" and self.method != "probe":
            raise ValueError(
                f"prior: the anomaly prior reads the base's frozen features; use method probe, not {self.method}"
            )
        return self
