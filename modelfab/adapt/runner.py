"""The training loop shared by every adaptation objective: schedule, checkpoints, resume, budget.

Each step's randomness comes from (seed, step) alone, and the weights, optimizer state, loss
history and elapsed time are checkpointed, so a killed run resumed from its last checkpoint
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from modelfab.adapt.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_optimizer,
    optimizer_tensors,
    save_checkpoint,
)
from modelfab.adapt.config import AdaptConfig
from modelfab.core.errors import ConfigError, ConflictError, DataError
from modelfab.zoo.storage import untie


class Objective(Protocol):
    def build_cache(self) -> None: ...
    def modules(self) -> dict[str, nn.Module]: ...
    def parameters(self) -> list[nn.Parameter]: ...
    def train_mode(self) -> None: ...
    def step_loss(self, step: int) -> Tensor: ...
    def after_step(self, step: int) -> None: ...
    def trainable_count(self) -> int: ...
    def finalize(self) -> Any: ...


@dataclass
class TrainResult:
    steps_done: int
    losses: list[float]
    elapsed_s: float
    resumed_from: int | None
    stopped: str  # "steps" | "time budget"


def lr_at(step: int, cfg: AdaptConfig) -> float:
    """Linear warm-up to ``cfg.lr`` then cosine decay to 5% of it at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _state(objective: Objective) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every objective module's state under ``model.<name>.``, tied duplicates dropped (-> kept key)."""
    full = {f"model.{name}.{k}": v for name, m in objective.modules().items() for k, v in m.state_dict().items()}
    return untie(full)


def _load_state(objective: Objective, tensors: dict[str, Tensor], tied: dict[str, str]) -> None:
    for name, module in objective.modules().items():
        prefix = f"model.{name}."
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        for dropped, kept in tied.items():  # re-supply tied tensors (load_state_dict copies into both)
            if dropped.startswith(prefix) and kept in tensors:
                part[dropped[len(prefix):]] = tensors[kept]
        try:
            module.load_state_dict(part)
        except RuntimeError as exc:
            raise DataError(f"checkpoint does not fit this run's {name}: {str(exc).splitlines()[0]}") from None


def train(
    objective: Objective,
    cfg: AdaptConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    tick: Callable[[int, float], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Run (or continue) the optimisation; checkpoints go to ``run_dir``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    params = objective.parameters()
    if not params:
        raise ConfigError("nothing to train: the objective has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, losses, elapsed, resumed_from = 0, [], 0.0, None
    if resume:
        ckpt = latest_checkpoint(run_dir, warn=log)
        if ckpt is None:
            log(f"no checkpoint in {run_dir}: starting from step 0")
        else:
            if ckpt.meta.get("fingerprint") != cfg.fingerprint():
                raise ConfigError("resume: the run's settings differ from the checkpoint's; use the same options")
            _load_state(objective, ckpt.tensors, dict(ckpt.meta.get("tied", {})))
            load_optimizer(opt, ckpt.tensors, ckpt.meta)
            start, losses, elapsed = ckpt.step, list(ckpt.meta["losses"]), float(ckpt.meta["elapsed_s"])
            resumed_from = ckpt.step
            log(f"resuming from {ckpt.path.name} (step {ckpt.step})")
    elif list_checkpoints(run_dir):
        raise ConflictError(f"{run_dir} already holds checkpoints of a run: pass --resume or pick another name")
    objective.build_cache()
    objective.train_mode()

    def checkpoint(step: int) -> None:
        opt_tensors, opt_meta = optimizer_tensors(opt)
        state, tied = _state(objective)
        meta = {**(extra_meta or {}), "fingerprint": cfg.fingerprint(), "losses": losses,
                "elapsed_s": elapsed, "optimizer": opt_meta, "tied": tied}
        save_checkpoint(run_dir, step, {**state, **opt_tensors}, meta)

    stopped = "steps"
    for step in range(start, cfg.steps):
        if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
            stopped = "time budget"
            break
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        torch.manual_seed(cfg.seed * 7_919 + step)  # dropout and other global-RNG draws
        loss = objective.step_loss(step)
        if not torch.isfinite(loss):
            raise DataError(f"loss is {loss.item()} at step {step}; the last good checkpoint in {run_dir} is kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        objective.after_step(step)
        losses.append(float(loss.detach()))
        elapsed += time.perf_counter() - t0
        if tick is not None:
            tick(step + 1, losses[-1])
        if (step + 1) % cfg.checkpoint_every == 0:
            checkpoint(step + 1)
    done = len(losses)
    if done and not (run_dir / f"ckpt-{done:06d}.json").exists():
        checkpoint(done)
    return TrainResult(done, losses, elapsed, resumed_from, stopped)
