"""Training loops: a full-batch probe on cached features, and mini-batch tuning of a backbone.

Both use class-weighted cross-entropy, AdamW, early stopping on the validation loss and keep the
best state. The backbone loop checkpoints every epoch (safetensors + JSON) and resumes from the
newest valid checkpoint; a NaN loss stops the run with a clear message and the last good
checkpoint kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelfab.adapt.checkpoint import latest_checkpoint, load_optimizer, optimizer_tensors, save_checkpoint
from modelfab.core.devices import resolve_device, to_device
from modelfab.core.errors import DataError
from modelfab.core.progress import track
from modelfab.tune.config import TuneConfig


@dataclass
class TrainOutcome:
    epochs: int
    best_epoch: int
    best_val_loss: float
    seconds: float
    stopped: str  # early-stop | max-epochs | time-budget
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    device: str = "cpu"


def mixed_precision(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (when ``enabled``); a no-op on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def class_weights(y: Tensor, n_classes: int, mode: str) -> Tensor | None:
    """Inverse-frequency weights (mean 1) for ``balanced``; None otherwise."""
    if mode != "balanced":
        return None
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1.0)
    return counts.sum() / (n_classes * counts)


def _check_finite(loss: Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise DataError(
            f"loss became {loss.item()} at {where}; stopped (lower --lr?); the last good checkpoint is kept"
        )


PROBE_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _fit_head(head: nn.Module, x: Tensor, y: Tensor, weights: Tensor | None, l2: float, iters: int) -> Tensor:
    """L-BFGS on class-weighted cross-entropy + ``l2`` * ||W||^2 (biases unpenalised); returns the loss."""
    decay = [p for n, p in head.named_parameters() if n.endswith("weight")]
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y, weight=weights) + l2 * sum((p**2).sum() for p in decay)
        loss.backward()
        return loss

    head.train()
    loss = opt.step(closure)
    head.eval()
    return loss


def train_probe(
    head: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor | None,
    y_val: Tensor | None,
    cfg: TuneConfig,
    n_classes: int,
) -> TrainOutcome:
    """Regularised logistic regression (or MLP) on (N, D) cached features, solved with L-BFGS.

    The L2 strength is chosen from :data:`PROBE_L2_GRID` by validation loss (like
    LogisticRegressionCV, but on the fixed validation split); ``epochs`` x 20 L-BFGS iterations.
    """
    weights = class_weights(y_train, n_classes, cfg.class_weight)
    init = {k: v.clone() for k, v in head.state_dict().items()}
    best: tuple[float, float, dict[str, Tensor]] = (math.inf, 0.0, init)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    stopped = "max-epochs"
    for l2 in PROBE_L2_GRID:
        torch.manual_seed(cfg.seed)
        head.load_state_dict(init)
        train_loss = _fit_head(head, x_train, y_train, weights, l2, cfg.epochs * 20).detach()
        _check_finite(train_loss, f"probe fit (l2={l2})")
        with torch.no_grad():
            val = (
                F.cross_entropy(head(x_val), y_val, weight=weights).item()
                if x_val is not None and y_val is not None and len(y_val)
                else float(train_loss)
            )
        history.append({"l2": l2, "train_loss": float(train_loss), "val_loss": val})
        if val < best[0]:
            best = (val, l2, {k: v.clone() for k, v in head.state_dict().items()})
        if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
            stopped = "time-budget"
            break
    head.load_state_dict(best[2])
    head.eval()
    chosen = PROBE_L2_GRID.index(best[1]) + 1 if best[1] in PROBE_L2_GRID else 0
    return TrainOutcome(len(history), chosen, best[0], time.perf_counter() - t0, stopped, history)


BatchFn = Callable[[Tensor, bool, torch.Generator], Any]  # (indices, augment, gen) -> model-ready batch


@dataclass
class Distillation:
    """Knowledge distillation targets for the training items (teacher outputs computed once).

    ``probs``: (N, C) teacher class probabilities; ``features``: optional (N, D_t) teacher embeddings
    matched by a linear projection of the student's embedding (the feature loss).
    """

    probs: Tensor
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft-target loss; 1 - alpha goes to the hard labels
    features: Tensor | None = None
    feature_weight: float = 0.0


def kd_loss(student_logits: Tensor, teacher_probs: Tensor, y: Tensor, temperature: float, alpha: float,
            weight: Tensor | None = None) -> Tensor:
    """Hinton et al. (2015): ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``.

    ``student_logits`` (N, C); ``teacher_probs`` (N, C) probabilities (sharpened/softened through their
    logs at temperature ``T``); ``y`` (N,) hard labels.
    """
    t = temperature
    soft_teacher = torch.softmax(torch.log(teacher_probs.clamp_min(1e-8)) / t, dim=1)  # (N, C)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), soft_teacher, reduction="batchmean")
    hard = F.cross_entropy(student_logits, y, weight=weight)
    return alpha * t * t * kl + (1.0 - alpha) * hard


def _trainable(net: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in net.named_parameters() if p.requires_grad}


def _restore(net: nn.Module, tensors: dict[str, Tensor], prefix: str = "") -> None:
    params = dict(net.named_parameters())
    for key, value in tensors.items():
        if key.startswith(prefix):
            params[key[len(prefix) :]].data.copy_(value)


def train_network(
    net: nn.Module,
    encoder: nn.Module,
    make_batch: BatchFn,
    y_train: Tensor,
    val_batches: Callable[[], list[tuple[Any, Tensor]]],
    cfg: TuneConfig,
    n_classes: int,
    run_dir: Path | None = None,
    resume: bool = False,
    distill: Distillation | None = None,
) -> TrainOutcome:
    """Mini-batch training of ``net`` (head + trainable backbone parameters).

    With ``distill`` the loss is :func:`kd_loss` against the teacher's outputs (plus the feature
    loss through a trained projection when teacher features are given); early stopping still uses
    the labelled validation loss.

    The encoder stays in eval mode (batch-norm statistics frozen: few labels cannot re-estimate
    them); gradients still flow through it.  On CUDA, forward passes run under bf16 autocast
    (``cfg.mixed_precision``); checkpoints and the returned best state are CPU tensors.
    """
    device = resolve_device(cfg.device)
    amp = cfg.mixed_precision
    net.to(device)
    try:
        head_params = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("head.")]
        body_params = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("head.")]
        groups = [{"params": head_params, "lr": cfg.lr}, {"params": body_params, "lr": cfg.lr * cfg.backbone_lr_scale}]
        projection: nn.Linear | None = None
        scenario: Any = net  # a ScenarioNet: ``_embed(batch) -> (N, D)`` and ``head``
        if distill is not None and distill.features is not None and distill.feature_weight > 0:
            embed_dim = int(scenario.head.mean.shape[0])  # the TaskHead's standardisation buffer is (D_s,)
            projection = nn.Linear(embed_dim, distill.features.shape[1]).to(device)  # student (D_s) -> teacher (D_t)
            groups.append({"params": list(projection.parameters()), "lr": cfg.lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        weights = class_weights(y_train, n_classes, cfg.class_weight)
        weights = weights.to(device) if weights is not None else None
        start_epoch, best_loss, best_epoch, bad = 1, math.inf, 0, 0
        best_state = _trainable(net)
        history: list[dict[str, float]] = []
        resumed_from = None
        elapsed_before = 0.0
        if resume and run_dir is not None:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is not None:
                _restore(net, ckpt.tensors, "model.")
                best_state = {k[5:]: v for k, v in ckpt.tensors.items() if k.startswith("best.")}
                load_optimizer(opt, ckpt.tensors, ckpt.meta)
                start_epoch = ckpt.step + 1
                best_loss, best_epoch, bad = ckpt.meta["best_loss"], ckpt.meta["best_epoch"], ckpt.meta["bad"]
                history = list(ckpt.meta["history"])
                elapsed_before = float(ckpt.meta.get("seconds", 0.0))
                resumed_from = ckpt.step
        t0 = time.perf_counter() - elapsed_before
        stopped = "max-epochs"
        n = len(y_train)
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.epochs + 1):
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen)
            net.train()
            encoder.eval()
            total = 0.0
            batches = range(0, n, cfg.batch_size)
            for b, start in enumerate(track(batches, len(batches), f"epoch {epoch}/{cfg.epochs}")):
                idx = order[start : start + cfg.batch_size]
                batch = to_device(make_batch(idx, cfg.augment != "none", gen), device)
                y = y_train[idx].to(device)
                with mixed_precision(device, amp):
                    if distill is None:
                        logits = net(batch)
                        loss = F.cross_entropy(logits.float(), y, weight=weights)
                    else:
                        z = scenario._embed(batch) if projection is not None else None  # (B, D_s)
                        logits = scenario.head(z) if z is not None else net(batch)
                        loss = kd_loss(logits.float(), distill.probs[idx].to(device), y, distill.temperature,
                                       distill.alpha, weights)
                        if z is not None and projection is not None and distill.features is not None:
                            target = distill.features[idx].to(device)
                            loss = loss + distill.feature_weight * F.mse_loss(projection(z).float(), target)
                _check_finite(loss, f"epoch {epoch} batch {b}")
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            net.eval()
            with torch.no_grad():
                vb = val_batches()
                if vb:
                    with mixed_precision(device, amp):
                        val_loss = sum(
                            F.cross_entropy(net(to_device(x, device)).float(), y.to(device), weight=weights,
                                            reduction="sum").item()
                            for x, y in vb
                        )
                    val_loss /= sum(len(y) for _, y in vb)
                else:
                    val_loss = total / n
            history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
            if val_loss < best_loss - 1e-5:
                best_loss, best_epoch, bad = val_loss, epoch, 0
                best_state = _trainable(net)
            else:
                bad += 1
            if run_dir is not None:
                opt_t, opt_meta = optimizer_tensors(opt)
                tensors = {
                    **{f"model.{k}": v for k, v in _trainable(net).items()},
                    **{f"best.{k}": v for k, v in best_state.items()},
                    **opt_t,
                }
                meta = {
                    "optimizer": opt_meta,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "bad": bad,
                    "history": history,
                    "seconds": time.perf_counter() - t0,
                }
                save_checkpoint(run_dir, epoch, tensors, meta)
            if bad >= cfg.patience:
                stopped = "early-stop"
                break
            if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
                stopped = "time-budget"
                break
        _restore(net, best_state)
        net.eval()
        return TrainOutcome(epoch, best_epoch, best_loss, time.perf_counter() - t0, stopped, history, resumed_from,
                            str(device))
    finally:
        net.to("cpu")  # the caller gets the trained net back on the CPU, also after an error
