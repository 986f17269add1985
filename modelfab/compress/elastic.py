"""``elastic``: a Once-for-All-style supernet trained by progressive shrinking, searched under a latency budget.

1. The teacher L2's EfficientNet-Lite + task head become an :class:`~modelfab.compress.supernet.ElasticLite`
   (elastic depth and expansion width in the last ``stages`` stages, channels sorted by L1 importance).
2. Latency lookup table (batch 1, ONNX Runtime, ``threads``): the fixed prefix, every (elastic block,
   width) and the suffix are timed as separate ONNX graphs; an affine fit on the whole materialised
   largest and smallest networks corrects the sum. A budget below the smallest network's measured
   latency fails here, before any training.
3. Progressive shrinking with distillation from the teacher's probabilities (:func:`finetune_kd`): per
   optimiser step one sub-network is sampled: first only the largest, then elastic depth (deeper
   choices first), then elastic width (wider first); the largest and the smallest unlocked ones are
   drawn more often (sandwich). The epoch kept is the one whose *smallest* sub-network has the best
   validation loss.
4. Search (``greedy`` or ``evolutionary``) of sub-networks predicted under the budget, maximising the
   validation metric (AUROC for defect tasks; ties: lower validation loss) of the supernet under the
   sub-config, after re-estimating the elastic BatchNorm statistics on training images for that
   sub-config. The fixed prefix's outputs are computed once, so each candidate costs only its tail.
5. The winner is materialised, its whole ONNX graph is timed (falling back to the next candidates if
   the table was optimistic) and registered as a child of the teacher (:func:`register_compressed`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from modelfab.compress.data import split_metrics
from modelfab.compress.extract import EXTRACTORS, ExtractResult
from modelfab.compress.kd import KDConfig, TeacherData, finetune_kd, register_compressed, teacher_data
from modelfab.compress.runtimes import model_format, scenario_predictor
from modelfab.compress.supernet import ElasticLite, LatencyTable, SubnetConfig, latency_table, measure, recalibrate
from modelfab.core.errors import ConfigError
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.zoo.vision.efficientnet_lite import EfficientNetLite

MAX_DROP = 0.02


class ElasticConfig(BaseModel):
    """Options of the elastic (Once-for-All-style) extractor."""

    model_config = ConfigDict(extra="forbid")

    max_latency_ms: float = Field(gt=0)
    """Latency budget of the exported sub-network: batch 1, ONNX Runtime fp32, ``threads`` threads."""
    epochs: int = Field(4, ge=1)
    """Progressive-shrinking epochs over the training split."""
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(16, ge=2)
    resolution: int | None = Field(None, ge=32, le=1024)
    """Lower training / serving resolution in pixels (default: the teacher's)."""
    stages: int = Field(2, ge=1)
    """How many of the last backbone stages are elastic."""
    depth_drops: list[int] = [0, 1, 2]
    """How many trailing blocks an elastic stage may skip (its first block always stays)."""
    width_ratios: list[float] = [1.0, 0.75, 0.5]
    """Expansion-width ratios of the elastic MBConv blocks."""
    search: Literal["greedy", "evolutionary"] = "greedy"
    population: int = Field(16, ge=4)
    generations: int = Field(6, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    """Wall-clock limit of the training (the search is bounded by population x generations)."""
    max_train: int | None = Field(None, ge=2)
    """Use at most this many training images."""
    bn: Literal["frozen", "recalibrate"] = "frozen"
    """BatchNorm statistics. ``frozen``: the teacher's stay (the L2 tunes train with the encoder in eval mode, so
    the weights fit those statistics); ``recalibrate``: Once-for-All style, batch statistics in training and
    statistics re-estimated per candidate sub-network on ``bn_images`` training images."""
    bn_images: int = Field(256, ge=8)
    """Training images used to re-estimate the BatchNorm statistics (``bn: recalibrate``)."""
    data: str | None = None
    """DATASET@version (default: the teacher's training dataset): train and val splits."""
    name: str | None = None
    """Name of the child (default: <teacher>-elastic)."""
    max_metric_drop: float = Field(MAX_DROP, ge=0)
    """Largest validation-metric drop vs the teacher for the parity record to pass."""
    seed: int = 0
    threads: int = Field(2, ge=1)
    """onnxruntime intra-op threads of the latency measurements."""
    latency_repeats: int = Field(30, ge=3)


def build_supernet(teacher_net: nn.Module, cfg: ElasticConfig) -> ElasticLite:
    """The elastic supernet of a loaded L2's probability network (``ProbabilityNet(ScenarioNet)``)."""
    scenario = getattr(teacher_net, "net", teacher_net)
    encoder, head = getattr(scenario, "encoder", None), getattr(scenario, "head", None)
    if not isinstance(encoder, EfficientNetLite) or not isinstance(head, nn.Module):
        raise ConfigError(f"elastic: needs an EfficientNet-Lite L2; this one's backbone is {type(encoder).__name__}")
    if getattr(scenario, "prior", None) is not None:
        raise ConfigError("elastic: this L2's anomaly prior reads its frozen base's patch maps, which sub-networks "
                          "would change; distill it into a smaller student (extract distill) instead")
    return ElasticLite(encoder, head, stages=cfg.stages, depth_drops=cfg.depth_drops, width_ratios=cfg.width_ratios)


class Shrinking:
    """``on_step`` of :func:`finetune_kd`: the progressive-shrinking sampler of sub-networks."""

    def __init__(self, net: ElasticLite, total_steps: int, seed: int) -> None:
        self.net, self.total, self.rng = net, max(1, total_steps), random.Random(seed)
        self.n_depth = max(len(c) for c in net.depth_choices)
        self.n_width = max(len(c) for c in net.width_choices.values())
        self.counts: dict[str, int] = {"largest": 0, "depth": 0, "width": 0}

    def levels(self, step: int) -> tuple[int, int, str]:
        """(depth levels, width levels, phase) unlocked at ``step``: warm-up, then depth, then width."""
        f = step / self.total
        if f < 0.15:
            return 1, 1, "largest"
        if f < 0.45:
            return min(self.n_depth, 2 + int((f - 0.15) / 0.3 * (self.n_depth - 1))), 1, "depth"
        return self.n_depth, min(self.n_width, 2 + int((f - 0.45) / 0.3 * (self.n_width - 1))), "width"

    def __call__(self, net: nn.Module, step: int) -> None:
        depth, width, phase = self.levels(step)
        self.counts[phase] += 1
        u = self.rng.random()
        if phase == "largest" or u < 0.2:
            cfg = self.net.largest()
        elif u < 0.4:
            cfg = self.net.make([c[min(depth, len(c)) - 1] for c in self.net.depth_choices],
                                [[width - 1] * len(s) for s in self.net.stage_blocks])
        else:
            cfg = self.net.sample(self.rng, depth, width)
        self.net.train_config = cfg


@torch.no_grad()
def recalibrate_prefix(net: ElasticLite, batches: Sequence[Tensor]) -> None:
    """Re-estimate the fixed prefix's BatchNorm statistics (they lag the weights after training)."""
    norms = [m for m in (net.stem, *net.blocks[: net.fixed]) for m in m.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [bn.momentum for bn in norms]
    net.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for b in batches:
            net.prefix(b)
    finally:
        for bn, m in zip(norms, saved, strict=True):
            bn.momentum = m
            bn.eval()


class Evaluator:
    """Validation metric of sub-configs on cached prefix outputs (tail BatchNorm re-estimated per config)."""

    def __init__(self, net: ElasticLite, teacher: TeacherData, fit: Callable[[Tensor], Tensor], bn_images: int,
                 recalibrate_bn: bool = False) -> None:
        self.net, self.teacher, self.recalibrate_bn = net, teacher, recalibrate_bn
        x = torch.cat(teacher.train.batches)
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:bn_images]]  # both classes
        if recalibrate_bn:
            recalibrate_prefix(net, [fit(x[i : i + 64]) for i in range(0, len(x), 64)])
        else:
            x = x[:0]
        net.eval()
        with torch.no_grad():
            self.calib = [net.prefix(fit(x[i : i + 64])) for i in range(0, len(x), 64)]
            self.val = [net.prefix(fit(b)) for b in teacher.val.batches]
        self.yv = torch.as_tensor(teacher.val.y, dtype=torch.long)
        self.cache: dict[SubnetConfig, tuple[float, float]] = {}

    def __call__(self, cfg: SubnetConfig) -> tuple[float, float]:
        """(metric, validation cross-entropy) of ``cfg``; leaves the tail statistics set for ``cfg``."""
        if cfg in self.cache:
            return self.cache[cfg]
        if self.recalibrate_bn:
            recalibrate(self.net, cfg, self.calib)
        with torch.no_grad():
            logits = torch.cat([self.net.tail(h, cfg) for h in self.val])
        loss = float(F.cross_entropy(logits, self.yv).item())
        metrics = split_metrics(self.teacher.predictor, self.teacher.val.y, torch.softmax(logits, 1).numpy())
        value = float(metrics.get(self.teacher.metric, metrics["accuracy"]))
        self.cache[cfg] = (value, loss)
        return value, loss


def _fitness(score: tuple[float, float]) -> tuple[float, float]:
    return score[0], -score[1]


def _shrinks(net: ElasticLite, cfg: SubnetConfig) -> list[SubnetConfig]:
    """Every config one step smaller than ``cfg``: one block one width down, or one stage one block shorter."""
    out = []
    for s, (stage, d, ws) in enumerate(zip(net.stage_blocks, cfg.depths, cfg.widths, strict=True)):
        for j, (i, r) in enumerate(zip(stage, ws, strict=False)):
            choices = net.width_choices[i]
            pos = choices.index(r)
            if pos + 1 < len(choices):
                widths = list(cfg.widths)
                widths[s] = (*ws[:j], choices[pos + 1], *ws[j + 1 :])
                out.append(SubnetConfig(cfg.depths, tuple(widths)))
        depth_choices = net.depth_choices[s]
        pos = depth_choices.index(d)
        if pos + 1 < len(depth_choices):
            nd = depth_choices[pos + 1]
            depths, widths = list(cfg.depths), list(cfg.widths)
            depths[s], widths[s] = nd, ws[:nd]
            out.append(SubnetConfig(tuple(depths), tuple(widths)))
    return out


def greedy_search(net: ElasticLite, table: LatencyTable, score: Evaluator, budget: float) -> list[SubnetConfig]:
    """From the largest network, repeatedly take the shrink step that loses least metric (then loss) per ms
    saved, until under ``budget``; returns the feasible configs seen, best first."""
    cfg = net.largest()
    seen = [cfg]
    while table.predict(net, cfg) > budget:
        base, base_ms = score(cfg), table.predict(net, cfg)
        moves: list[tuple[float, float, int, SubnetConfig]] = []
        for cand in _shrinks(net, cfg):
            saved = base_ms - table.predict(net, cand)
            m, loss = score(cand)
            seen.append(cand)
            cost = ((base[0] - m) + 0.1 * max(0.0, loss - base[1])) / saved if saved > 0 else math.inf
            moves.append((cost, -saved, len(moves), cand))  # ties: the larger saving
        if not moves:
            break
        cfg = min(moves)[3]
    return _ranked(net, table, score, seen, budget)


def _ranked(net: ElasticLite, table: LatencyTable, score: Evaluator, seen: Sequence[SubnetConfig],
            budget: float) -> list[SubnetConfig]:
    feasible = {c for c in seen if table.predict(net, c) <= budget}
    return sorted(feasible, key=lambda c: (_fitness(score(c)), table.predict(net, c)), reverse=True)


def evolutionary_search(net: ElasticLite, table: LatencyTable, score: Evaluator, budget: float,
                        population: int, generations: int, seed: int) -> list[SubnetConfig]:
    """A small evolutionary search (mutation + crossover) over configs predicted under ``budget``."""
    rng = random.Random(seed)

    def feasible(c: SubnetConfig) -> bool:
        return table.predict(net, c) <= budget

    def draw(make: Callable[[], SubnetConfig]) -> SubnetConfig | None:
        for _ in range(50):
            c = make()
            if feasible(c):
                return c
        return None

    def mutate(c: SubnetConfig) -> SubnetConfig:
        fresh = net.sample(rng)
        depths = [fd if rng.random() < 0.2 else d for d, fd in zip(c.depths, fresh.depths, strict=True)]
        widths = []
        for stage, d, ws, fws in zip(net.stage_blocks, depths, c.widths, fresh.widths, strict=True):
            row = []
            for j, i in enumerate(stage[:d]):
                keep = ws[j] if j < len(ws) else fws[j] if j < len(fws) else net.width_choices[i][-1]
                row.append(rng.choice(net.width_choices[i]) if rng.random() < 0.2 else keep)
            widths.append(tuple(row))
        return SubnetConfig(tuple(depths), tuple(widths))

    def cross(a: SubnetConfig, b: SubnetConfig) -> SubnetConfig:
        pick = [rng.random() < 0.5 for _ in a.depths]
        return SubnetConfig(tuple(x if p else y for p, x, y in zip(pick, a.depths, b.depths, strict=True)),
                            tuple(x if p else y for p, x, y in zip(pick, a.widths, b.widths, strict=True)))

    pop = [c for c in (net.largest(), net.smallest()) if feasible(c)]
    while len(pop) < population:
        c = draw(lambda: net.sample(rng))
        if c is None:
            break
        pop.append(c)
    seen = list(pop)
    for _ in range(generations):
        parents = sorted(set(pop), key=lambda c: _fitness(score(c)), reverse=True)[: max(2, population // 4)]
        children: list[SubnetConfig] = []

        def offspring(parents: list[SubnetConfig] = parents) -> SubnetConfig:
            if rng.random() < 0.5:
                return mutate(rng.choice(parents))
            return cross(rng.choice(parents), rng.choice(parents))

        while len(children) < population - len(parents):
            child = draw(offspring)
            if child is None:
                break
            children.append(child)
        pop = parents + children
        seen += children
        for c in children:
            score(c)
    return _ranked(net, table, score, seen, budget)


def search_verified(net: ElasticLite, table: LatencyTable, score: Evaluator, size: int, cfg: ElasticConfig,
                    tries: int = 4) -> tuple[SubnetConfig, float, list[dict[str, Any]]]:
    """Search, materialise and time the winner; when it measures over budget, shift the table by the miss
    (``offset += measured - predicted``) and search again (at most ``tries`` times, the smallest network
    last). Returns (config, measured ms, log); the tail statistics are left set for the config."""
    budget, log = cfg.max_latency_ms, []
    table = dataclasses.replace(table, measured=dict(table.measured))
    smallest = net.smallest()
    for attempt in range(tries):
        if cfg.search == "greedy":
            ranked = greedy_search(net, table, score, budget)
        else:
            ranked = evolutionary_search(net, table, score, budget, cfg.population, cfg.generations,
                                         cfg.seed + attempt)
        cand = ranked[0] if ranked and attempt < tries - 1 else smallest
        score.cache.pop(cand, None)
        score(cand)  # re-estimate the tail statistics for this config before materialising it
        ms = measure(net, cand, size, cfg.threads, cfg.latency_repeats)
        predicted = table.predict(net, cand)
        log.append({"subnet": cand.to_dict(), "predicted_ms": predicted, "latency_ms": ms})
        if ms <= budget:
            return cand, ms, log
        if cand == smallest:
            break
        table.offset += ms - predicted
    raise ConfigError(f"elastic: no sub-network measured under {budget:g} ms; the last tried, "
                      f"{log[-1]['subnet']}, measures {log[-1]['latency_ms']:.2f} ms now "
                      "(the machine may be busy: measure again or raise the budget)")


@dataclass
class TrainedSupernet:
    """A supernet trained by progressive shrinking, with its latency table and validation evaluator."""

    model: Model
    net: ElasticLite
    table: LatencyTable
    teacher: TeacherData
    score: Evaluator
    size: int  # serving resolution
    teacher_params: int
    details: dict[str, Any]


def _too_fast(budget: float, fastest: float, smallest: SubnetConfig, size: int, threads: int) -> ConfigError:
    return ConfigError(
        f"elastic: no sub-network meets {budget:g} ms; the fastest measured is {fastest:.2f} ms "
        f"({smallest.describe()}, {size} px, {threads} threads). Raise max_latency_ms, lower "
        "resolution, or make more stages elastic (stages, depth_drops, width_ratios)"
    )


def train_supernet(store: Store, model: Model, cfg: ElasticConfig) -> TrainedSupernet:
    """Build the supernet of ``model``, time it (failing early if even the smallest sub-network misses
    ``cfg.max_latency_ms``) and train it by progressive shrinking."""
    t0 = time.perf_counter()
    fmt, _ = model_format(store, model)
    if fmt != "scenario":
        raise ConfigError(f"{model.name}:{model.version} is a {fmt} model; compress the tuned L2 it came from")
    predictor, prob_net = scenario_predictor(store, model)
    if predictor.input_spec.modality != "vision":
        raise ConfigError(f"{model.name} is a {predictor.input_spec.modality} model; elastic takes vision L2s")
    net = build_supernet(prob_net, cfg)
    size = cfg.resolution or int(predictor.input_spec.image_size or 224)
    smallest = net.smallest()
    fastest = measure(net, smallest, size, cfg.threads, cfg.latency_repeats)
    if fastest > cfg.max_latency_ms:
        raise _too_fast(cfg.max_latency_ms, fastest, smallest, size, cfg.threads)
    table = latency_table(net, size, cfg.threads, cfg.latency_repeats, known={smallest: fastest})
    t_table = time.perf_counter() - t0

    teacher = teacher_data(store, model, cfg.data, cfg.max_train)
    src = int(predictor.input_spec.image_size or 224)

    def fit(b: Tensor) -> Tensor:
        return F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False) if size != src else b

    kd = KDConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, patience=cfg.epochs + 1,
                  time_budget_s=cfg.time_budget_s, seed=cfg.seed)
    steps = cfg.epochs * math.ceil(len(teacher.train) / cfg.batch_size)
    sampler = Shrinking(net, steps, cfg.seed)
    net.frozen_stats = cfg.bn == "frozen"
    net.active = net.smallest()  # the validation loss that picks the epoch is the smallest network's
    train = finetune_kd(net, teacher, kd, resize=fit if size != src else None, on_step=sampler)
    net.train_config, net.active = None, net.largest()
    score = Evaluator(net, teacher, fit, cfg.bn_images, recalibrate_bn=cfg.bn == "recalibrate")
    details = {"latency_table": table.to_dict(), "train": {**train, "phases": sampler.counts},
               "seconds": {"table": t_table, "train": time.perf_counter() - t0 - t_table}}
    return TrainedSupernet(model, net, table, teacher, score, size, sum(p.numel() for p in prob_net.parameters()),
                           details)


def export_subnet(store: Store, trained: TrainedSupernet, cfg: ElasticConfig) -> ExtractResult:
    """Search ``trained`` under ``cfg.max_latency_ms``, verify the winner's latency and register it."""
    net, table, score, size, budget = trained.net, trained.table, trained.score, trained.size, cfg.max_latency_ms
    smallest = net.smallest()
    fastest = table.measured[smallest.describe()]
    if fastest > budget:
        raise _too_fast(budget, fastest, smallest, size, cfg.threads)
    t1 = time.perf_counter()
    largest = score(net.largest())
    best, latency, tried = search_verified(net, table, score, size, cfg)  # statistics left set for best
    t_search = time.perf_counter() - t1
    value, val_loss = score.cache[best]
    sub = net.extract(best)
    child, record, nbytes = register_compressed(
        store, trained.teacher, sub, name=cfg.name or f"{trained.model.name}-elastic", method="elastic",
        config=cfg.model_dump(), max_drop=cfg.max_metric_drop, image_size=size,
        card_extra={"subnet": best.to_dict(), "latency_ms": latency, "budget_ms": budget,
                    "resolution": size, "threads": cfg.threads},
    )
    details = {
        "subnet": best.to_dict(), "latency_ms": latency, "budget_ms": budget,
        "predicted_ms": table.predict(net, best), "resolution": size,
        "params": sum(p.numel() for p in sub.parameters()), "teacher_params": trained.teacher_params,
        "val_metric": value, "val_loss": val_loss, "largest_val": {"metric": largest[0], "loss": largest[1]},
        "teacher_val_metric": trained.teacher.teacher_value, "metric": trained.teacher.metric,
        "search": cfg.search, "evaluated": len(score.cache), "verified": tried,
        **trained.details,
    }
    details["seconds"] = {**trained.details["seconds"], "search": t_search}
    return ExtractResult(child, record, nbytes, details)


@EXTRACTORS.register("elastic", config=ElasticConfig,
                     summary="Once-for-All-style elastic depth/width supernet, searched under a latency budget")
def extract_elastic(store: Store, model: Model, cfg: ElasticConfig) -> ExtractResult:
    """A sub-network of the teacher L2 under ``max_latency_ms``, trained by progressive shrinking.

    Several budgets from one training: :func:`train_supernet` once, then :func:`export_subnet` per budget.
    """
    return export_subnet(store, train_supernet(store, model, cfg), cfg)
