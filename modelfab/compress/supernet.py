"""An elastic (Once-for-All-style) supernet over an EfficientNet-Lite L2, and its standalone sub-networks.

The last ``stages`` stages of the backbone are elastic:

- depth: a sub-network keeps the first ``d`` blocks of a stage (the first block, which changes the
  shape, always stays; the dropped ones are residual blocks, so skipping them is legal);
- width: an MBConv block keeps the first ``k`` of its expanded channels (expand conv outputs,
  depthwise conv, project conv inputs). The channels are sorted once, at construction, by the L1
  norm of the project conv's input weights, so the first channels are the most important ones.

:class:`ElasticLite` selects a sub-network at forward time by slicing weights (no copies);
:meth:`ElasticLite.extract` materialises it as :class:`SubNet`, a plain network of smaller
``nn.Conv2d`` layers whose output equals the sliced supernet's. Latency helpers time ONNX graphs
under onnxruntime (batch 1).
"""

from __future__ import annotations

import copy
import itertools
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelfab.compress.graph import ProbabilityNet, export_onnx
from modelfab.compress.runtimes import onnx_runner
from modelfab.core.errors import ConfigError
from modelfab.zoo.vision.efficientnet_lite import ConvBNAct, EfficientNetLite, MBConv, same_pad

WIDTH_DIVISOR = 8


@dataclass(frozen=True)
class SubnetConfig:
    """A sub-network: blocks kept per elastic stage and the width ratio of every kept block."""

    depths: tuple[int, ...]
    widths: tuple[tuple[float, ...], ...]  # per elastic stage, one ratio per kept block

    def to_dict(self) -> dict[str, Any]:
        return {"depths": list(self.depths), "widths": [list(w) for w in self.widths]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubnetConfig:
        return cls(tuple(int(x) for x in d["depths"]), tuple(tuple(float(r) for r in w) for w in d["widths"]))

    def describe(self) -> str:
        widths = "; ".join(",".join(f"{r:g}" for r in w) for w in self.widths)
        return f"depths {list(self.depths)}, widths [{widths}]"


def make_width(mid: int, ratio: float) -> int:
    """Expanded channels kept at ``ratio``: a multiple of 8 (at least 8), at most ``mid``."""
    k = max(WIDTH_DIVISOR, int(mid * ratio + WIDTH_DIVISOR / 2) // WIDTH_DIVISOR * WIDTH_DIVISOR)
    return min(mid, k)


def _bn(bn: nn.BatchNorm2d, h: Tensor) -> Tensor:
    """BatchNorm over the first ``C`` channels of ``bn`` (running statistics updated in place in training)."""
    n = h.shape[1]
    momentum = bn.momentum
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative average (BN recalibration)
            momentum = 1.0 / float(bn.num_batches_tracked)
    assert bn.running_mean is not None and bn.running_var is not None
    return F.batch_norm(h, bn.running_mean[:n], bn.running_var[:n], bn.weight[:n], bn.bias[:n],
                        bn.training, float(momentum or 0.0), bn.eps)


def _cba(m: ConvBNAct, x: Tensor, out_k: int | None = None, in_k: int | None = None, groups: int = 1) -> Tensor:
    """:class:`ConvBNAct` with the first ``out_k`` output / ``in_k`` input channels of its weights."""
    w = m.conv.weight
    if out_k is not None:
        w = w[:out_k]
    if in_k is not None and groups == 1:
        w = w[:, :in_k]
    if m.stride > 1:
        x = F.pad(x, same_pad((x.shape[-2], x.shape[-1]), m.kernel, m.stride))
    h = F.conv2d(x, w, None, m.conv.stride, m.conv.padding, m.conv.dilation, groups)
    return m.act(_bn(m.bn, h))


def block_forward(block: MBConv, x: Tensor, k: int) -> Tensor:
    """An MBConv block keeping its first ``k`` expanded channels: (N, Cin, H, W) -> (N, Cout, H/s, W/s)."""
    h = _cba(block.expand, x, out_k=k) if block.expand is not None else x
    h = _cba(block.dw, h, out_k=k, groups=k)
    h = _cba(block.project, h, in_k=k)
    return h + x if block.residual else h


def _copy_cba(m: ConvBNAct, cin: int, cout: int, groups: int, out_k: int, in_k: int) -> ConvBNAct:
    new = ConvBNAct(cin, cout, m.kernel, m.stride, groups=groups, act=not isinstance(m.act, nn.Identity))
    w = m.conv.weight.detach()[:out_k]
    if groups == 1:
        w = w[:, :in_k]
    with torch.no_grad():
        new.conv.weight.copy_(w)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new.bn, name).copy_(getattr(m.bn, name).detach()[:cout])
    new.bn.eps, new.bn.momentum = m.bn.eps, m.bn.momentum
    return new


def slim_block(block: MBConv, k: int) -> MBConv:
    """A standalone copy of ``block`` with ``k`` expanded channels (real smaller convolutions)."""
    new = copy.deepcopy(block)
    new.drop_path = 0.0
    mid = block.dw.conv.out_channels
    if k == mid:
        return new
    cout = block.project.conv.out_channels
    if block.expand is not None:
        cin = block.expand.conv.in_channels
        new.expand = _copy_cba(block.expand, cin, k, 1, k, cin)
    new.dw = _copy_cba(block.dw, k, k, k, k, 1)
    new.project = _copy_cba(block.project, k, cout, 1, cout, k)
    return new


class SubNet(nn.Module):
    """A materialised sub-network: stem -> blocks -> 1x1 head conv -> average pool -> task head (logits)."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], head_conv: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head_conv = head_conv
        self.head = head

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, S, S) -> (N, C) logits
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        return self.head(self.head_conv(h).mean(dim=(2, 3)))


class ElasticLite(nn.Module):
    """Elastic depth and width over the last ``stages`` stages of an EfficientNet-Lite + task head.

    ``forward(x)`` runs :attr:`train_config` in training mode when it is set, else :attr:`active`
    (default: the largest sub-network, which equals the source network).
    """

    def __init__(self, encoder: EfficientNetLite, head: nn.Module, *, stages: int = 2,
                 depth_drops: Sequence[int] = (0, 1, 2), width_ratios: Sequence[float] = (1.0, 0.75, 0.5)) -> None:
        super().__init__()
        n_stages = len(encoder.stage_ends)
        if not 1 <= stages <= n_stages - 1:
            raise ConfigError(f"stages: must be within 1..{n_stages - 1}, got {stages}")
        if not width_ratios or any(not 0 < r <= 1 for r in width_ratios):
            raise ConfigError(f"width_ratios: each must be in (0, 1], got {list(width_ratios)}")
        if not depth_drops or any(d < 0 for d in depth_drops):
            raise ConfigError(f"depth_drops: each must be >= 0, got {list(depth_drops)}")
        enc = copy.deepcopy(encoder)
        self.stem, self.blocks, self.head_conv, self.head = enc.stem, enc.blocks, enc.head, copy.deepcopy(head)
        for p in self.parameters():
            p.requires_grad_(True)
        starts = [0, *(e + 1 for e in encoder.stage_ends[:-1])]
        ranges = [list(range(s, e + 1)) for s, e in zip(starts, encoder.stage_ends, strict=True)]
        self.stage_blocks: list[list[int]] = ranges[n_stages - stages:]
        self.fixed = self.stage_blocks[0][0]  # blocks before this index are not elastic
        self.depth_choices: list[list[int]] = [
            sorted({max(1, len(b) - d) for d in depth_drops}, reverse=True) for b in self.stage_blocks
        ]
        ratios = sorted({float(r) for r in width_ratios}, reverse=True)
        self.width_choices: dict[int, list[float]] = {
            i: (ratios if self._block(i).expand is not None else [1.0]) for b in self.stage_blocks for i in b
        }
        self.mids = {i: int(self._block(i).dw.conv.out_channels) for b in self.stage_blocks for i in b}
        self.active: SubnetConfig = self.largest()
        self.train_config: SubnetConfig | None = None
        self.frozen_stats = False  # True: the backbone stays in eval mode in training (BN statistics frozen)
        self.sort_channels()

    def train(self, mode: bool = True) -> ElasticLite:
        super().train(mode)
        if self.frozen_stats:  # as the L2 tunes train: encoder in eval mode, only the task head follows ``mode``
            for m in (self.stem, self.blocks, self.head_conv):
                m.eval()
        return self

    def _block(self, i: int) -> MBConv:
        block = self.blocks[i]
        assert isinstance(block, MBConv)
        return block

    # -- the configuration space ------------------------------------------------------------------
    def make(self, depths: Sequence[int], width_levels: Sequence[Sequence[int]]) -> SubnetConfig:
        """A config from depths and, per kept block, an index into its width choices (clipped)."""
        widths: list[tuple[float, ...]] = []
        for stage, d in zip(self.stage_blocks, depths, strict=True):
            lv = list(width_levels[len(widths)]) if len(width_levels) > len(widths) else []
            ws = []
            for j, i in enumerate(stage[:d]):
                choices = self.width_choices[i]
                ws.append(choices[min(lv[j] if j < len(lv) else 0, len(choices) - 1)])
            widths.append(tuple(ws))
        return SubnetConfig(tuple(depths), tuple(widths))

    def largest(self) -> SubnetConfig:
        return self.make([c[0] for c in self.depth_choices], [])

    def smallest(self) -> SubnetConfig:
        return self.make([c[-1] for c in self.depth_choices], [[99] * len(s) for s in self.stage_blocks])

    def configs(self) -> Iterator[SubnetConfig]:
        """Every sub-network config (the product can be large: iterate, don't list)."""
        for depths in itertools.product(*self.depth_choices):
            per_block = [self.width_choices[i] for s, d in zip(self.stage_blocks, depths, strict=True) for i in s[:d]]
            for flat in itertools.product(*per_block):
                widths, pos = [], 0
                for d in depths:
                    widths.append(tuple(flat[pos : pos + d]))
                    pos += d
                yield SubnetConfig(tuple(depths), tuple(widths))

    def sample(self, rng: random.Random, depth_levels: int | None = None,
               width_levels: int | None = None) -> SubnetConfig:
        """A random config using only the ``depth_levels`` / ``width_levels`` largest choices (None: all)."""
        depths = [rng.choice(c[: depth_levels or len(c)]) for c in self.depth_choices]
        widths = []
        for stage, d in zip(self.stage_blocks, depths, strict=True):
            ws: list[float] = []
            for i in stage[:d]:
                wc = self.width_choices[i]
                ws.append(rng.choice(wc[: width_levels or len(wc)]))
            widths.append(tuple(ws))
        return SubnetConfig(tuple(depths), tuple(widths))

    def check(self, cfg: SubnetConfig) -> SubnetConfig:
        """``cfg`` if it is a legal sub-network of this supernet, else ConfigError."""
        if len(cfg.depths) != len(self.stage_blocks) or len(cfg.widths) != len(self.stage_blocks):
            raise ConfigError(f"subnet: expected {len(self.stage_blocks)} elastic stages, got {cfg.to_dict()}")
        for stage, choices, d, ws in zip(self.stage_blocks, self.depth_choices, cfg.depths, cfg.widths, strict=True):
            if d not in choices or len(ws) != d:
                raise ConfigError(f"subnet: depth {d} / widths {list(ws)} not allowed (depths {choices})")
            for i, r in zip(stage, ws, strict=False):
                if r not in self.width_choices[i]:
                    raise ConfigError(f"subnet: width {r} not allowed for block {i}: {self.width_choices[i]}")
        return cfg

    def kept(self, cfg: SubnetConfig) -> list[tuple[int, int]]:
        """(block index, expanded channels kept) of every elastic block that ``cfg`` runs."""
        return [(i, make_width(self.mids[i], r))
                for stage, d, ws in zip(self.stage_blocks, cfg.depths, cfg.widths, strict=True)
                for i, r in zip(stage[:d], ws, strict=True)]

    # -- weights ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sort_channels(self) -> None:
        """Permute every elastic block's expanded channels by decreasing L1 importance (output unchanged)."""
        for stage in self.stage_blocks:
            for i in stage:
                b = self._block(i)
                importance = b.project.conv.weight.abs().sum(dim=(0, 2, 3))  # (mid,)
                perm = torch.argsort(importance, descending=True)
                convs = [b.dw] if b.expand is None else [b.expand, b.dw]
                for m in convs:
                    m.conv.weight.copy_(m.conv.weight[perm])
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        t = getattr(m.bn, name)
                        t.copy_(t[perm])
                b.project.conv.weight.copy_(b.project.conv.weight[:, perm])

    def tail_norms(self) -> list[nn.BatchNorm2d]:
        """BatchNorm layers whose input depends on the sub-network (elastic blocks and the head conv)."""
        out: list[nn.BatchNorm2d] = [m for i in range(self.fixed, len(self.blocks))
                                     for m in self.blocks[i].modules() if isinstance(m, nn.BatchNorm2d)]
        return [*out, self.head_conv.bn]

    # -- forward ----------------------------------------------------------------------------------
    def prefix(self, x: Tensor) -> Tensor:
        """Stem and the fixed blocks: (N, 3, S, S) -> the first elastic block's input."""
        h = self.stem(x)
        for b in self.blocks[: self.fixed]:
            h = b(h)
        return h

    def tail(self, h: Tensor, cfg: SubnetConfig) -> Tensor:
        """Elastic blocks under ``cfg``, head conv, pool and task head: prefix output -> (N, C) logits."""
        for i, k in self.kept(cfg):
            h = block_forward(self._block(i), h, k)
        return self.head(self.head_conv(h).mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, S, S) -> (N, C) logits
        cfg = self.train_config if self.training and self.train_config is not None else self.active
        return self.tail(self.prefix(x), cfg)

    def extract(self, cfg: SubnetConfig) -> SubNet:
        """A standalone plain network equal to this supernet under ``cfg`` (eval-mode statistics)."""
        self.check(cfg)
        blocks: list[nn.Module] = [copy.deepcopy(b) for b in self.blocks[: self.fixed]]
        for b in blocks:
            b.drop_path = 0.0  # type: ignore[assignment]
        blocks += [slim_block(self._block(i), k) for i, k in self.kept(cfg)]
        return SubNet(copy.deepcopy(self.stem), blocks, copy.deepcopy(self.head_conv), copy.deepcopy(self.head)).eval()


@torch.no_grad()
def recalibrate(net: ElasticLite, cfg: SubnetConfig, features: Sequence[Tensor]) -> None:
    """Reset the tail BatchNorm statistics and re-estimate them for ``cfg`` on cached prefix outputs."""
    norms = net.tail_norms()
    saved = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for h in features:
            net.tail(h, cfg)
    finally:
        for bn, m in zip(norms, saved, strict=True):
            bn.momentum = m
            bn.eval()


# -- latency ---------------------------------------------------------------------------------------
def onnx_ms(module: nn.Module, example: Tensor, threads: int, repeats: int = 30, warmup: int = 10,
            probabilities: bool = False) -> float:
    """Median batch-1 latency (ms) of ``module`` exported to ONNX fp32 under onnxruntime (CPU)."""
    graph = export_onnx((ProbabilityNet(module) if probabilities else module).eval(), example)
    return graph_ms(graph, example[:1], threads, repeats, warmup)


def graph_ms(graph: bytes, x: Tensor, threads: int, repeats: int = 30, warmup: int = 10) -> float:
    """Median latency (ms) of ONNX bytes on input ``x`` under onnxruntime, after ``warmup`` untimed runs."""
    run = onnx_runner(graph, threads)
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(statistics.median(times))


class _Block(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class _Suffix(nn.Module):
    def __init__(self, head_conv: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.head_conv, self.head = head_conv, head

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.head(self.head_conv(x).mean(dim=(2, 3))), dim=1)


class _Prefix(nn.Module):
    def __init__(self, net: ElasticLite) -> None:
        super().__init__()
        self.stem, self.blocks = net.stem, nn.ModuleList(net.blocks[: net.fixed])

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        return h


@dataclass
class LatencyTable:
    """Per-segment batch-1 ONNX timings, corrected by an affine fit on whole materialised networks.

    ``predict(cfg) = scale * (prefix + sum of kept blocks at their widths + suffix) + offset``: the sum
    of isolated segments misses fusion across segments and counts one session call per segment,
    so ``scale`` / ``offset`` come from measuring the largest and the smallest whole networks.
    """

    prefix_ms: float
    suffix_ms: float
    blocks_ms: dict[tuple[int, int], float]  # (block index, kept channels) -> ms
    measured: dict[str, float]  # describe(config) -> whole-network ms
    scale: float = 1.0
    offset: float = 0.0

    def raw(self, net: ElasticLite, cfg: SubnetConfig) -> float:
        return self.prefix_ms + self.suffix_ms + sum(self.blocks_ms[ik] for ik in net.kept(cfg))

    def predict(self, net: ElasticLite, cfg: SubnetConfig) -> float:
        return self.scale * self.raw(net, cfg) + self.offset

    def to_dict(self) -> dict[str, Any]:
        return {"prefix_ms": self.prefix_ms, "suffix_ms": self.suffix_ms,
                "blocks_ms": {f"{i}@{k}": v for (i, k), v in sorted(self.blocks_ms.items())},
                "measured_ms": self.measured, "scale": self.scale, "offset": self.offset}


@torch.no_grad()
def latency_table(net: ElasticLite, size: int, threads: int, repeats: int = 30,
                  known: dict[SubnetConfig, float] | None = None) -> LatencyTable:
    """Time the prefix, every (elastic block, width) and the suffix, then fit on the largest / smallest
    networks (``known``: whole-network timings already measured)."""
    net.eval()
    x = torch.zeros(1, 3, size, size)
    prefix = _Prefix(net)
    h = prefix(x)
    prefix_ms = onnx_ms(prefix, x, threads, repeats)
    blocks: dict[tuple[int, int], float] = {}
    for stage in net.stage_blocks:
        for i in stage:
            block = net._block(i)
            for r in net.width_choices[i]:
                k = make_width(net.mids[i], r)
                if (i, k) not in blocks:
                    blocks[(i, k)] = onnx_ms(_Block(slim_block(block, k)).eval(), torch.zeros_like(h), threads, repeats)
            h = block(h)
    suffix_ms = onnx_ms(_Suffix(net.head_conv, net.head), torch.zeros_like(h), threads, repeats)
    table = LatencyTable(prefix_ms, suffix_ms, blocks, {})
    big, small = net.largest(), net.smallest()
    real = dict(known or {})
    for cfg in (big, small):
        if cfg not in real:
            real[cfg] = measure(net, cfg, size, threads, repeats)
        table.measured[cfg.describe()] = real[cfg]
    pb, ps = table.raw(net, big), table.raw(net, small)
    scale = (real[big] - real[small]) / (pb - ps) if pb - ps > 1e-3 else 0.0
    if 0.5 <= scale <= 3.0:
        table.scale = scale
        table.offset = real[small] - table.scale * ps
    else:  # no spread to fit (one config) or a noisy one: shift only
        table.offset = statistics.mean(real[c] - table.raw(net, c) for c in (big, small))
    return table


def measure(net: ElasticLite, cfg: SubnetConfig, size: int, threads: int, repeats: int = 30) -> float:
    """Batch-1 latency (ms) of the materialised sub-network (ONNX fp32 with softmax, onnxruntime).

    Two rounds of ``repeats``, the faster median kept (a shared machine's noise only adds time).
    """
    graph = export_onnx(ProbabilityNet(net.extract(cfg)).eval(), torch.zeros(2, 3, size, size))
    x = torch.zeros(1, 3, size, size)
    return min(graph_ms(graph, x, threads, repeats) for _ in range(2))
