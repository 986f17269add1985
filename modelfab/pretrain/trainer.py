"""The pretraining loop: AdamW, warm-up + cosine, clipping, accumulation, checkpoints, exact resume.

Exact resume: the weights, the AdamW moments and step counts, the router biases (buffers), the
data cursor and the spike counter are all in the checkpoint, and the data order is a function of
(seed, cursor) only; so the steps after a resume compute the same losses as an uninterrupted run
(bit for bit on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelfab.pretrain.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from modelfab.pretrain.config import ModelConfig, TrainConfig
from modelfab.pretrain.data import TokenStream
from modelfab.pretrain.distributed import (
    DistInfo,
    all_reduce_,
    barrier,
    default_ep_group,
    set_ep_group,
    update_router_biases,
    wrap_ddp,
)
from modelfab.pretrain.fsdp import gather_full_state, set_grad_sync, shard_fsdp
from modelfab.pretrain.logs import JsonlLog, SpikeCounter, gpu_peak_tflops, plot_log
from modelfab.pretrain.model import Transformer
from modelfab.pretrain.router import load_stats


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only; norm gains are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    checkpoint: Path
    log_path: Path
    params: int
    active_params: int
    tokens: int
    plots: list[Path] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains a :class:`Transformer` on a :class:`TokenStream`; resumes from ``out_dir/checkpoints``."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        stream: TokenStream,
        out_dir: Path,
        info: DistInfo | None = None,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.model_cfg, self.stream, self.out_dir = cfg, model_cfg, stream, out_dir
        self.info = info or DistInfo()
        self.device = resolve_device(cfg.device)
        self.extra_state = extra_state or {}
        torch.manual_seed(cfg.seed)
        self.model = Transformer(model_cfg).to(self.device)
        if model_cfg.ffn == "moe" and model_cfg.moe.balance == "ep_group":
            set_ep_group(self.model, default_ep_group(self.info))
        self.fsdp = cfg.strategy == "fsdp" and self.info.enabled
        if self.fsdp:  # the model itself becomes FSDP-sharded (its parameters DTensors)
            self.net = shard_fsdp(self.model, self.info, self.device)
        else:
            self.net = wrap_ddp(self.model, self.info, self.device)
        self.opt = build_optimizer(self.model, cfg)
        self.step, self.cursor, self.tokens = 0, 0, 0
        self.spikes = SpikeCounter(cfg.spike_factor)
        self.ckpt_dir = out_dir / "checkpoints"
        self.log = JsonlLog(out_dir / "metrics.jsonl")
        self.autocast = self.device.startswith("cuda") and cfg.bf16
        peak = cfg.gpu_peak_tflops
        if peak is None and self.device.startswith("cuda"):
            peak = gpu_peak_tflops(torch.cuda.get_device_name())
        self.peak_tflops = peak
        self.resumed_from: int | None = None
        path = latest_checkpoint(self.ckpt_dir)
        if path is not None:
            self._restore(path)

    # -- state -------------------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path, self.model, self.opt, self.device, sharded=self.fsdp)
        self.step, self.cursor, self.tokens = state["step"], state["cursor"], state["tokens"]
        self.spikes.load(state["spikes"])
        self.resumed_from = self.step

    def full_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any] | torch.optim.Optimizer]:
        """Model and optimizer state (gathered to rank 0 under FSDP: a collective, empty elsewhere)."""
        if self.fsdp:
            weights, optim = gather_full_state(self.model, self.opt)
            return weights, optim or {}
        return self.model.state_dict(), self.opt

    def save(self) -> Path:
        path = self.ckpt_dir / f"step_{self.step:08d}"
        weights, optim = self.full_state()
        if self.info.is_main:
            state = {
                "cursor": self.cursor,
                "tokens": self.tokens,
                "spikes": self.spikes.state(),
                "model_config": self.model_cfg.model_dump(mode="json"),
                "train_config": self.cfg.model_dump(mode="json"),
                **self.extra_state,
            }
            path = save_checkpoint(self.ckpt_dir, self.step, weights, optim, state, self.cfg.keep_checkpoints)
        barrier(self.info)
        return path

    # -- one optimizer step ------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        lr = lr_at(self.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.net.train()
        t0 = time.perf_counter()
        moe = list(self.model.moe_layers())
        counts = [torch.zeros(m.cfg.n_experts, device=self.device) for m in moe]
        sums = torch.zeros(4, device=self.device)  # loss, ce, aux, mtp
        imbalance = 0.0
        for micro in range(cfg.grad_accum):
            x, y = self.stream.batch(self.cursor + info.rank * cfg.micro_batch, cfg.micro_batch)
            self.cursor += cfg.micro_batch * info.world_size
            x, y = x.to(self.device), y.to(self.device)
            last = micro == cfg.grad_accum - 1
            no_sync: Any = contextlib.nullcontext()
            if self.fsdp:
                set_grad_sync(self.model, last)
            elif info.enabled and not last:
                no_sync = self.net.no_sync()  # type: ignore[operator]
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
            with no_sync:
                with amp:
                    out = self.net(x, y)
                (out.loss / cfg.grad_accum).backward()
            parts = [out.loss, out.ce, out.aux, out.mtp if out.mtp is not None else out.loss.new_zeros(())]
            sums += torch.stack([p.detach().float() for p in parts])
            for i, m in enumerate(moe):
                counts[i] += m.counts.to(self.device)
                imbalance += m.imbalance()
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # DTensor under FSDP
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        update_router_biases(self.model, info)
        all_reduce_(sums, info, mean=True)
        for c in counts:
            all_reduce_(c, info)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.step += 1
        step_tokens = cfg.micro_batch * cfg.grad_accum * info.world_size * cfg.seq_len
        self.tokens += step_tokens
        loss, ce, aux, mtp = (float(v) / cfg.grad_accum for v in sums.tolist())
        spike = self.spikes.update(loss)
        rec: dict[str, Any] = {
            "step": self.step,
            "loss": loss,
            "ce": ce,
            "aux": aux,
            "mtp": mtp,
            "lr": lr,
            "grad_norm": grad_norm,
            "spike": spike,
            "spikes": self.spikes.spikes,
            "tokens": self.tokens,
            "tokens_per_s": step_tokens / dt,
            "step_s": dt,
        }
        if self.peak_tflops:
            flops = self.model.flops_per_token(cfg.seq_len) * step_tokens / dt
            rec["mfu"] = flops / (self.peak_tflops * 1e12 * info.world_size)
        if moe:
            stats = [load_stats(c) for c in counts]
            rec["expert_load"] = [c.tolist() for c in counts]
            rec["max_mean_load"] = sum(s["max_mean_load"] for s in stats) / len(stats)
            rec["imbalance"] = imbalance / (len(moe) * cfg.grad_accum)
        return rec

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train until ``max_steps`` (or ``stop_after`` steps, keeping the schedule of max_steps)."""
        cfg = self.cfg
        end = cfg.max_steps if stop_after is None else min(cfg.max_steps, stop_after)
        rec: dict[str, Any] = {}
        saved = self.step
        while self.step < end:
            rec = self.train_step()
            if self.info.is_main and (self.step % cfg.log_every == 0 or self.step == end):
                self.log.write({**rec, "resumed_from": self.resumed_from})
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self.save()
                saved = self.step
        existing = latest_checkpoint(self.ckpt_dir)
        ckpt = existing if existing is not None and saved == self.step else self.save()
        plots: list[Path] = []
        if cfg.plots and self.info.is_main and self.log.path.exists():
            plots = plot_log(self.log.path, self.out_dir)
        return TrainResult(
            steps=self.step,
            final_loss=float(rec.get("loss", float("nan"))),
            checkpoint=ckpt,
            log_path=self.log.path,
            params=self.model.num_params(),
            active_params=self.model.num_params(active=True),
            tokens=self.tokens,
            plots=plots,
            last=rec,
        )
