"""Structured channel pruning of a vision L2 (torch-pruning), then KD fine-tuning against the unpruned teacher.

The teacher's logits network (backbone + task head) is copied, the head's input standardisation is
folded into its first ``nn.Linear`` (so the 1280-channel head convolution can be pruned too: the
standardisation buffers would otherwise pin its width) and the backbone's unused ImageNet classifier
is dropped. torch-pruning's dependency graph then removes whole channels: a pruned 1x1 expansion
removes the same channels from its batch norm, its depthwise convolution and the next 1x1 projection;
the channels of a residual stage are pruned together across every block that adds into it. The task
head's final ``nn.Linear`` is ignored (its output classes stay), its input features follow the head
convolution.

The ratio is uniform: every prunable layer keeps ``1 - ratio`` of its channels (``global_pruning``
off). A global magnitude ranking compares weight norms across layers whose scales differ (batch norm
follows every convolution) and can empty narrow layers; a uniform ratio keeps the shape of the
network and makes the speed-up predictable (MACs of a 1x1 convolution fall by about ``(1 - ratio)^2``).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from torch import Tensor, nn

from modelfab.compress.data import split_metrics
from modelfab.compress.extract import EXTRACTORS, ExtractResult
from modelfab.compress.kd import KDConfig, TeacherData, finetune_kd, register_compressed, teacher_data
from modelfab.core.errors import ConfigError
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.tune.heads import TaskHead
from modelfab.tune.scenario import ScenarioNet
from modelfab.zoo.base import evaluating

MAX_RATIO = 0.95
TAYLOR_BATCHES = 4  # training batches whose gradients rank channels for importance="taylor"


class PruneConfig(BaseModel):
    """Options of structured channel pruning + KD fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = 0.5
    """Fraction of the channels removed in every prunable layer, in (0, 0.95)."""
    importance: Literal["magnitude", "taylor"] = "magnitude"
    """Channel ranking: L2 norm of the weights (magnitude) or first-order Taylor (|w * grad| on training batches)."""
    round_to: int = Field(default=8, ge=1)
    """Kept channel counts are multiples of this (1: exact ratio; narrow layers may lose more, Lite0 stem 32 -> 16
    at 0.3). onnxruntime's CPU convolutions block channels
    by 8: at ratio 0.3 on Lite0 (160 px) exact counts ran 1.3-1.5x slower than the unpruned teacher, multiples
    of 8 0.5-0.6x."""
    finetune_epochs: int = Field(default=4, ge=0, validation_alias=AliasChoices("finetune_epochs", "epochs"))
    """KD fine-tuning epochs of the pruned network (0: register it as pruned); ``epochs`` (the CLI's --epochs) too."""
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=16, ge=1)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    """Weight of the distillation term (the rest is cross-entropy on the labels)."""
    bn: Literal["frozen", "train"] = "train"
    """BatchNorm during fine-tuning: ``frozen`` keeps the teacher's statistics (eval mode, affine parameters
    still trained), as the L2 tunes do; ``train`` uses batch statistics and updates the running ones."""
    time_budget_s: float | None = Field(default=None, gt=0)
    """Stop fine-tuning after the epoch that passes this many seconds (best weights kept)."""
    max_train: int | None = Field(default=None, ge=1)
    """Training items used (default: the whole train split)."""
    data: str | None = None
    """DATASET@version (default: the teacher's training dataset); train for fine-tuning, val for parity."""
    name: str | None = None
    """Name of the child (default: <model>-pruned<percent>)."""
    max_metric_drop: float = Field(default=0.05, ge=0)
    """Largest drop of the validation metric against the teacher for parity to pass."""
    seed: int = 0


def check_ratio(ratio: float) -> None:
    """ConfigError unless 0 < ratio < 0.95."""
    if not 0.0 < ratio < MAX_RATIO:
        raise ConfigError(f"prune: ratio must be in (0, {MAX_RATIO}), got {ratio}")


class LogitsNet(nn.Module):
    """``(N, 3, S, S) -> (N, C)`` logits: the backbone's pooled embedding into a plain head."""

    def __init__(self, encoder: nn.Module, embed: Any, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self._embed = embed  # bound to the backbone object whose module is ``encoder``

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self._embed(x))


def fold_standardisation(head: TaskHead) -> nn.Module:
    """The head's ``net`` with ``(z - mean) / std`` folded into its first linear layer (same function)."""
    body = copy.deepcopy(head.net)
    first = body if isinstance(body, nn.Linear) else next(m for m in body.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        weight = first.weight / head.std[None, :]
        first.weight.copy_(weight)
        if first.bias is None:
            raise ConfigError("prune: the task head's linear layer has no bias")
        first.bias.sub_(weight @ head.mean)
    return body


def logits_network(teacher: TeacherData) -> tuple[LogitsNet, nn.Linear]:
    """A prunable copy of the teacher's logits network and its final linear layer (kept whole)."""
    source = teacher.net.net  # ProbabilityNet -> ScenarioNet
    if not isinstance(source, ScenarioNet):
        raise ConfigError(f"prune: unsupported network {type(source).__name__}")
    if source.prior is not None:
        raise ConfigError("prune: this L2's anomaly prior reads its frozen base's patch maps, which pruning "
                          "would change; distill it into a smaller student (extract distill) instead")
    scenario = copy.deepcopy(source)  # one memo: the copied _embed is bound to the copied encoder
    encoder, head = scenario.encoder, scenario.head
    embed: Any = scenario._embed
    if getattr(embed, "__self__", None) is not None and getattr(embed.__self__, "module", encoder) is not encoder:
        raise ConfigError("prune: the backbone's embedding is not bound to its copied network")
    if not isinstance(head, TaskHead):
        raise ConfigError(f"prune: unsupported head {type(head).__name__}")
    if isinstance(getattr(encoder, "classifier", None), nn.Module):
        encoder.classifier = None  # type: ignore[assignment]  # the ImageNet classifier is not on the embedding path
    net = LogitsNet(encoder, embed, fold_standardisation(head)).eval()
    for p in net.parameters():
        p.requires_grad_(True)
    final = [m for m in net.head.modules() if isinstance(m, nn.Linear)][-1]
    x = teacher.val.batches[0][:4]
    with torch.no_grad():
        ref, got = scenario.eval()(x), net(x)
    if not torch.allclose(ref, got, atol=1e-3, rtol=1e-3):
        diff = float((ref - got).abs().max())
        raise ConfigError(f"prune: the folded network differs from the teacher (max logit difference {diff:.2g})")
    return net, final


def count(net: nn.Module, size: int) -> tuple[int, int]:
    """(MACs, parameters) of ``net`` at one ``size`` x ``size`` image (torch-pruning's counter)."""
    import torch_pruning as tp

    with evaluating(net):
        macs, params = tp.utils.count_ops_and_params(net, torch.zeros(1, 3, size, size))
    return int(macs), int(params)


def prune_channels(
    net: nn.Module, final: nn.Module, size: int, ratio: float, importance: str = "magnitude",
    grad_batches: list[tuple[Tensor, Tensor, Tensor]] | None = None, kd: KDConfig | None = None,
    round_to: int | None = None,
) -> None:
    """Remove ``ratio`` of the channels of every prunable layer of ``net`` in place (``final`` kept whole).

    ``importance="taylor"`` ranks channels by ``|w * dL/dw|`` with ``L`` the KD loss summed over
    ``grad_batches`` (inputs, teacher probabilities, labels). ``round_to``: kept channel counts are
    multiples of it.
    """
    import torch_pruning as tp

    from modelfab.tune.train import kd_loss

    check_ratio(ratio)
    example = torch.zeros(1, 3, size, size)
    imp: Any
    if importance == "magnitude":
        imp = tp.importance.MagnitudeImportance(p=2)
    elif importance == "taylor":
        imp = tp.importance.TaylorImportance()
    else:
        raise ConfigError(f"prune: importance must be magnitude or taylor, got {importance!r}")
    net.eval()
    pruner = tp.pruner.MetaPruner(
        net, example, importance=imp, pruning_ratio=ratio, ignored_layers=[final], global_pruning=False,
        round_to=round_to,
    )
    if importance == "taylor":
        cfg = kd or KDConfig()
        net.zero_grad()
        for x, t, y in grad_batches or []:
            kd_loss(net(x), t, y, cfg.temperature, cfg.alpha).backward()
    pruner.step()
    net.zero_grad(set_to_none=True)
    net.eval()


@EXTRACTORS.register(
    "prune", config=PruneConfig,
    summary="structured channel pruning (torch-pruning, uniform ratio) + KD fine-tuning against the teacher",
)
def extract_prune(store: Store, model: Model, cfg: PruneConfig) -> ExtractResult:
    """A channel-pruned, KD fine-tuned ONNX fp32 child of the vision L2 ``model``."""
    check_ratio(cfg.ratio)
    t0 = time.perf_counter()
    teacher = teacher_data(store, model, cfg.data, cfg.max_train)
    size = int(teacher.predictor.input_spec.image_size or 224)
    net, final = logits_network(teacher)
    macs0, params0 = count(net, size)
    kd = KDConfig(epochs=cfg.finetune_epochs, lr=cfg.lr, batch_size=cfg.batch_size, temperature=cfg.temperature,
                  alpha=cfg.alpha, time_budget_s=cfg.time_budget_s, seed=cfg.seed, freeze_bn=cfg.bn == "frozen")
    grads: list[tuple[Tensor, Tensor, Tensor]] = []
    if cfg.importance == "taylor":
        torch.manual_seed(cfg.seed)
        x = torch.cat(teacher.train.batches)
        y = torch.as_tensor(teacher.train.y, dtype=torch.long)
        order = torch.randperm(len(y))[: TAYLOR_BATCHES * cfg.batch_size]
        grads = [(x[i], teacher.train_probs[i], y[i]) for i in order.split(cfg.batch_size)]
    prune_channels(net, final, size, cfg.ratio, cfg.importance, grads, kd,
                   round_to=cfg.round_to if cfg.round_to > 1 else None)
    macs1, params1 = count(net, size)
    pruned_s = time.perf_counter() - t0
    with torch.no_grad():
        probs = torch.cat([F.softmax(net(b), dim=1) for b in teacher.val.batches]).numpy()
    pruned_val = split_metrics(teacher.predictor, teacher.val.y, probs)
    history: dict[str, Any] = {"history": [], "seconds": 0.0, "steps": 0}
    if cfg.finetune_epochs > 0:
        history = finetune_kd(net, teacher, kd)
    pct = round(cfg.ratio * 100)
    card = {"ratio": cfg.ratio, "importance": cfg.importance, "scope": "uniform", "round_to": cfg.round_to,
            "macs": {"before": macs0, "after": macs1}, "params": {"before": params0, "after": params1}}
    child, record, size_bytes = register_compressed(
        store, teacher, net, name=cfg.name or f"{model.name}-pruned{pct}", method="prune",
        config=cfg.model_dump(), max_drop=cfg.max_metric_drop, card_extra=card,
    )
    details = {
        **card,
        "teacher_val": teacher.teacher_value,
        "pruned_val": pruned_val.get(teacher.metric, pruned_val["accuracy"]),
        "metric": teacher.metric,
        "prune_seconds": pruned_s,
        "finetune_seconds": history["seconds"],
        "seconds": time.perf_counter() - t0,
        "history": history["history"],
    }
    return ExtractResult(child, record, size_bytes, details)
