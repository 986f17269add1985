"""Shared pieces of the compressors that train a new network against a teacher L2 (vision).

``teacher_data``: the teacher's train and validation splits preprocessed at its input size, with the
teacher's probabilities computed once. ``finetune_kd``: mini-batch training of a logits network with
:func:`~modelfab.tune.train.kd_loss` and early stopping on the labelled validation loss, within a time
budget. ``register_compressed``: threshold on validation, ONNX fp32 export, validation metrics under
ONNX Runtime, the compression record, and the registered child of the teacher.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelfab.compress.data import SplitInputs, labelled_split, metric_name, split_metrics
from modelfab.compress.export import register_child
from modelfab.compress.graph import ProbabilityNet, export_onnx
from modelfab.compress.parity import compression_record
from modelfab.compress.runtimes import Predictor, onnx_runner, scenario_predictor
from modelfab.core.errors import ConfigError
from modelfab.core.progress import track
from modelfab.evaluate.curves import choose_threshold_for_recall
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.tune.train import kd_loss


@dataclass
class TeacherData:
    """A teacher L2 under torch, its network and its splits with teacher probabilities."""

    predictor: Predictor
    net: nn.Module  # ProbabilityNet: (N, 3, S, S) -> (N, C) probabilities
    train: SplitInputs
    val: SplitInputs
    train_probs: Tensor  # (N_train, C)
    val_probs: Tensor  # (N_val, C)
    metric: str
    teacher_value: float  # the teacher's validation metric
    target_recall: float

    @property
    def data(self) -> str:
        return self.val.ref.rsplit(":", 1)[0]


def _probs(net: nn.Module, batches: list[Tensor]) -> Tensor:
    net.eval()
    with torch.inference_mode():
        return torch.cat([net(b) for b in batches])


def teacher_data(store: Store, model: Model, data: str | None = None, max_train: int | None = None) -> TeacherData:
    """Load a vision L2 teacher and its labelled train / val splits (default: its training dataset)."""
    from modelfab.compress.runtimes import model_format

    fmt, card = model_format(store, model)
    if fmt != "scenario":
        raise ConfigError(f"{model.name}:{model.version} is a {fmt} model; compress the tuned L2 it came from")
    predictor, net = scenario_predictor(store, model)
    if predictor.input_spec.modality != "vision":
        raise ConfigError(f"{model.name} is a {predictor.input_spec.modality} model; this compressor takes vision L2s")
    train = labelled_split(store, predictor, data, split="train", limit=max_train)
    val = labelled_split(store, predictor, data, split="val")
    if len(val) == 0 or len(train) == 0:
        raise ConfigError(f"{val.ref}: the teacher's dataset needs labelled train and val items")
    train_probs, val_probs = _probs(net, train.batches), _probs(net, val.batches)
    metric = metric_name(predictor.task)
    metrics = split_metrics(predictor, val.y, val_probs.numpy())
    recall = float((card.get("scenario") or {}).get("target_recall") or 0.95)
    return TeacherData(predictor, net, train, val, train_probs, val_probs, metric,
                       float(metrics.get(metric, metrics["accuracy"])), recall)


@dataclass
class KDConfig:
    """Training settings of :func:`finetune_kd`."""

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 16
    temperature: float = 4.0
    alpha: float = 0.7
    weight_decay: float = 1e-4
    patience: int = 3
    time_budget_s: float | None = None
    seed: int = 0
    augment: bool = True  # horizontal flips of the student's input
    freeze_bn: bool = False  # BatchNorm layers stay in eval mode (their statistics fixed) while training


def _rebatch(batches: list[Tensor]) -> Tensor:
    return torch.cat(batches)  # (N, 3, S, S)


def finetune_kd(
    net: nn.Module,
    teacher: TeacherData,
    cfg: KDConfig,
    *,
    resize: Callable[[Tensor], Tensor] | None = None,
    on_step: Callable[[nn.Module, int], None] | None = None,
) -> dict[str, Any]:
    """Train ``net`` ((N, 3, S, S) -> (N, C) logits) on the teacher's train split with the KD loss.

    ``resize`` maps the teacher-size batch to the student's input (lower resolution students).
    ``on_step(net, step)`` runs before every optimiser step (e.g. sampling a sub-network of a supernet).
    Keeps the weights of the epoch with the best labelled validation loss; returns the history.
    """
    torch.manual_seed(cfg.seed)
    x = _rebatch(teacher.train.batches)
    y = torch.as_tensor(teacher.train.y, dtype=torch.long)
    t = teacher.train_probs
    xv = _rebatch(teacher.val.batches)
    yv = torch.as_tensor(teacher.val.y, dtype=torch.long)
    fit = resize or (lambda b: b)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_loss, bad, history = {k: v.detach().clone() for k, v in net.state_dict().items()}, math.inf, 0, []
    t0 = time.perf_counter()
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        order = torch.randperm(len(y), generator=gen)
        net.train()
        if cfg.freeze_bn:
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        total = 0.0
        starts = range(0, len(y), cfg.batch_size)
        for start in track(starts, len(starts), f"kd epoch {epoch}/{cfg.epochs}"):
            idx = order[start : start + cfg.batch_size]
            batch = x[idx]
            if cfg.augment:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
            if on_step is not None:
                on_step(net, step)
            loss = kd_loss(net(fit(batch)), t[idx], y[idx], cfg.temperature, cfg.alpha)
            if not torch.isfinite(loss):
                raise ConfigError(f"kd: loss became {loss.item()} at epoch {epoch}; lower lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += float(loss.item()) * len(idx)
        net.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(net(fit(xv)), yv).item())
        history.append({"epoch": epoch, "train_loss": total / len(y), "val_loss": val_loss})
        if val_loss < best_loss - 1e-5:
            best_loss, bad = val_loss, 0
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
        if bad >= cfg.patience or (cfg.time_budget_s and time.perf_counter() - t0 > cfg.time_budget_s):
            break
    net.load_state_dict(best)
    net.eval()
    return {"history": history, "best_val_loss": best_loss, "seconds": time.perf_counter() - t0, "steps": step}


def register_compressed(
    store: Store,
    teacher: TeacherData,
    net: nn.Module,
    *,
    name: str,
    method: str,
    config: dict[str, Any],
    max_drop: float,
    image_size: int | None = None,
    card_extra: dict[str, Any] | None = None,
) -> tuple[Model, dict[str, Any], int]:
    """Export ``net`` (logits at ``image_size``, default the teacher's) as an ONNX fp32 child of the teacher.

    The operating threshold is chosen on the validation split for the teacher's target recall;
    validation metrics are measured under ONNX Runtime. Returns (child, compression record, bytes).
    """
    src = teacher.predictor
    size = image_size or int(src.input_spec.image_size or 224)
    spec = dataclasses.replace(src.input_spec, image_size=size)
    graph = export_onnx(ProbabilityNet(net).eval(), torch.zeros(2, 3, size, size))
    run = onnx_runner(graph, src.threads)
    xv = [F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False)
          if b.shape[-1] != size else b for b in teacher.val.batches]
    probs = np.concatenate([run(b) for b in xv])
    threshold = src.threshold
    if src.positive is not None and src.threshold is not None:
        threshold = choose_threshold_for_recall((teacher.val.y == src.positive).astype(int),
                                                probs[:, src.positive], teacher.target_recall)
    student = dataclasses.replace(src, threshold=threshold, input_spec=spec)
    metrics = split_metrics(student, teacher.val.y, probs)
    value = float(metrics.get(teacher.metric, metrics["accuracy"]))
    record = compression_record(teacher.metric, value, teacher.teacher_value, teacher.val.ref, max_drop=max_drop,
                                extra={"method": method})
    params = int(sum(p.numel() for p in net.parameters()))
    child = register_child(
        store, student, graph, name=name, fmt="onnx", precision="fp32",
        metrics={"parity": record, "val": metrics, f"val@{teacher.data}": metrics},
        config={"extract": {"method": method, **config}},
        card_extra={"compression": {"method": method, "teacher": src.model.id, "params": params, **(card_extra or {})}},
        params=params,
    )
    return child, record, len(graph)
