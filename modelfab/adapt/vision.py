"""Vision adaptation: SimCLR or BYOL on the last stages of an EfficientNet-Lite-style network.

The frozen early blocks (``blocks[:train_from]``, stem included) run once per cached view: with
``cache_views = V`` each image gets V augmented views whose early-stage maps are cached (fp16);
a step picks two different cached views per item and flips them at random.  With
``cache_views = 0`` every step augments the images and runs the frozen stages afresh.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from modelfab.adapt.augment import make_view
from modelfab.adapt.config import AdaptConfig
from modelfab.adapt.lora import add_lora, merge_lora
from modelfab.adapt.losses import byol_loss, nt_xent, projector
from modelfab.core.errors import ConfigError

Progress = Callable[[str, int], Callable[[int], None]]


def _step_gen(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + salt)


def stack_images(images: Sequence[np.ndarray], side: int) -> Tensor:
    """uint8 images -> (N, C, side, side) uint8, C = 1 if all are grayscale else 3."""
    gray = all(im.ndim == 2 or (im.ndim == 3 and im.shape[2] == 3 and
                                bool((im[..., 0] == im[..., 1]).all() and (im[..., 0] == im[..., 2]).all()))
               for im in images)
    out = []
    for im in images:
        t = torch.from_numpy(np.array(im, dtype=np.float32))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)[:3]
        t = t[:1] if gray else (t.expand(3, -1, -1) if t.shape[0] == 1 else t)
        t = F.interpolate(t.unsqueeze(0), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(t.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


class VisionObjective:
    """Holds the network split (frozen early part / trainable rest), heads and the view cache."""

    def __init__(self, backbone: Any, images: Sequence[np.ndarray], cfg: AdaptConfig, progress: Progress | None = None):
        net = backbone.module
        if not all(hasattr(net, a) for a in ("stem", "blocks", "head", "pool")):
            raise ConfigError(f"vision adaptation needs a block-structured network; {backbone.name} is not")
        self.backbone, self.net, self.cfg = backbone, net, cfg
        ends = list(getattr(net, "stage_ends", [len(net.blocks) - 1]))
        self.start = cfg.train_from if cfg.train_from is not None else (ends[-3] + 1 if len(ends) >= 3 else 0)
        if not 0 <= self.start < len(net.blocks):
            raise ConfigError(f"train_from: must be within 0..{len(net.blocks) - 1}, got {self.start}")
        self.resolution = cfg.resolution or backbone.input_spec.image_size or 224
        spec = backbone.input_spec
        self.mean = torch.tensor(spec.mean or (0.5, 0.5, 0.5)).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std or (0.5, 0.5, 0.5)).view(1, 3, 1, 1)
        net.requires_grad_(False)
        self.trainable = nn.ModuleList([*net.blocks[self.start:], net.head])
        if cfg.lora_rank > 0:
            n = add_lora(self.trainable, cfg.lora_rank, alpha=2.0 * cfg.lora_rank)
            if n == 0:
                raise ConfigError("lora_rank: the trainable blocks have no 1x1 convolutions")
        else:
            self.trainable.requires_grad_(True)
        self.objective = "byol" if cfg.objective == "byol" else "simclr"
        torch.manual_seed(cfg.seed)  # reproducible head initialisation
        self.proj = projector(backbone.embed_dim)
        self.pred = projector(128, 512, 128) if self.objective == "byol" else None
        self.teacher: nn.ModuleList | None = None
        self.teacher_proj: nn.Module | None = None
        if self.pred is not None:
            self.teacher = copy.deepcopy(self.trainable).requires_grad_(False)
            self.teacher_proj = copy.deepcopy(self.proj).requires_grad_(False)
        self.images = stack_images(images, round(self.resolution * 1.15))
        self.cache: Tensor | None = None
        self.cache_path: Path | None = None  # set by the caller to keep the cache across resumes
        self.progress = progress

    # -- parts -------------------------------------------------------------------------------------
    def _normalise(self, x01: Tensor) -> Tensor:
        if x01.shape[1] == 1:
            x01 = x01.expand(-1, 3, -1, -1)
        return (x01 - self.mean) / self.std

    @torch.no_grad()
    def _early(self, x: Tensor) -> Tensor:  # (N, 3, R, R) -> block ``start`` input
        self.net.stem.eval()
        for blk in self.net.blocks[: self.start]:
            blk.eval()
        return self.net.run_blocks(self.net.stem(x), 0, self.start)

    def _views(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        x = self.images[idx].float() / 255.0
        return self._early(self._normalise(make_view(x, self.resolution, gen, self.cfg.augment)))

    def build_cache(self) -> None:
        """Run the frozen stages on ``cache_views`` augmented views of every image (fp16)."""
        views, n, chunk = self.cfg.cache_views, len(self.images), 32
        if views == 0:
            return
        key = json.dumps({"cfg": self.cfg.fingerprint(), "n": n, "start": self.start,
                          "digest": hashlib.sha256(self.images.numpy().tobytes()).hexdigest()}, sort_keys=True)
        if self.cache_path is not None and self.cache_path.exists():
            try:
                with safe_open(str(self.cache_path), framework="pt") as f:
                    if (f.metadata() or {}).get("key") == key:
                        self.cache = f.get_tensor("cache")
                        return
            except Exception:  # an unreadable cache is rebuilt
                pass
        tick = self.progress("caching frozen-stage views", views * n) if self.progress else None
        parts: list[list[Tensor]] = [[] for _ in range(views)]
        for v in range(views):
            for start in range(0, n, chunk):
                idx = torch.arange(start, min(start + chunk, n))
                parts[v].append(self._views(idx, _step_gen(self.cfg.seed, start, salt=101 + v)).half())
                if tick:
                    tick(len(idx))
        self.cache = torch.stack([torch.cat(p) for p in parts], dim=1)  # (N, V, C, h, w)
        if self.cache_path is not None:
            tmp = self.cache_path.with_suffix(".tmp")
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"cache": self.cache.contiguous()}, str(tmp), metadata={"key": key})
            os.replace(tmp, self.cache_path)

    def _student(self, h: Tensor) -> Tensor:
        for blk in self.trainable[:-1]:
            h = blk(h)
        return self.proj(self.net.pool(self.trainable[-1](h)))  # (B, 128)

    def _teacher(self, h: Tensor) -> Tensor:
        if self.teacher is None or self.teacher_proj is None:
            raise RuntimeError("no teacher outside byol")
        with torch.no_grad():
            for blk in self.teacher[:-1]:
                h = blk(h)
            return self.teacher_proj(self.net.pool(self.teacher[-1](h)))

    # -- training protocol ---------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"net": self.net, "proj": self.proj}
        if self.pred is not None and self.teacher is not None and self.teacher_proj is not None:
            mods.update(pred=self.pred, teacher=self.teacher, teacher_proj=self.teacher_proj)
        return mods

    def parameters(self) -> list[nn.Parameter]:
        heads = [self.proj] + ([self.pred] if self.pred is not None else [])
        return [p for m in [self.trainable, *heads] for p in m.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.trainable.train(self.cfg.lora_rank == 0)  # LoRA keeps the base BN statistics fixed
        self.proj.train()
        if self.pred is not None:
            self.pred.train()

    def step_loss(self, step: int) -> Tensor:
        gen = _step_gen(self.cfg.seed, step)
        n = len(self.images)
        idx = torch.randperm(n, generator=gen)[: min(self.cfg.batch_size, n)]
        if self.cache is not None:
            v = self.cache.shape[1]
            a = torch.randint(0, v, (len(idx),), generator=gen)
            b = (a + torch.randint(1, v, (len(idx),), generator=gen)) % v
            h1, h2 = self.cache[idx, a].float(), self.cache[idx, b].float()
            flip = (torch.rand(2, len(idx), 1, 1, 1, generator=gen) < 0.5)
            h1 = torch.where(flip[0], h1.flip(-1), h1)
            h2 = torch.where(flip[1], h2.flip(-2), h2)
        else:
            h1, h2 = self._views(idx, gen), self._views(idx, gen)
        if self.pred is None:
            return nt_xent(self._student(h1), self._student(h2), self.cfg.temperature)
        p1, p2 = self.pred(self._student(h1)), self.pred(self._student(h2))
        return 0.5 * (byol_loss(p1, self._teacher(h2)) + byol_loss(p2, self._teacher(h1)))

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if self.teacher is None or self.teacher_proj is None:
            return
        pairs = [(self.teacher, self.trainable), (self.teacher_proj, self.proj)]
        for teacher, online in pairs:
            for tp, sp in zip(teacher.parameters(), online.parameters(), strict=True):
                tp.mul_(self.cfg.ema).add_(sp.detach(), alpha=1 - self.cfg.ema)
            for tb, sb in zip(teacher.buffers(), online.buffers(), strict=True):
                tb.copy_(sb)

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def finalize(self) -> Any:
        """Merge LoRA adapters, unfreeze, eval mode: the adapted backbone (same architecture)."""
        if self.cfg.lora_rank > 0:
            merge_lora(self.trainable)
        self.net.requires_grad_(True)
        self.net.eval()
        return self.backbone
