"""EfficientNet-Lite as a plain ``nn.Module`` built from ``nn.Conv2d`` layers (LoRA-friendly).

Mirrors ``efficientnet_lite_pytorch`` (ReLU6, no squeeze-excitation, fixed stem and head) but
without its image-size-bound padding modules: strided convs get TensorFlow "SAME" padding
computed from the input shape in ``forward``, stride-1 convs use symmetric ``padding=k//2``.
So outputs equal the package's at its native resolution and any other resolution also works.

Stage ends (used as named features): Lite0 has 16 blocks, ``block4`` (stride 8, 40 ch),
``block10`` (stride 16, 112 ch), ``block14`` (stride 32, 192 ch); Lite2 has 21 blocks with
stage ends ``block6`` / ``block14`` / ``block19``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (repeats, kernel, stride, expand ratio, in filters, out filters), EfficientNet-Lite base stages
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant -> (width multiplier, depth multiplier, native resolution, dropout)
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch convention (TF's 0.99)


@dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (TF rule)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def block_specs(variant: str) -> list[BlockSpec]:
    """Every MBConv block of ``variant`` in order (stem and head are fixed at 32 / 1280)."""
    width, depth, _, _ = VARIANTS[variant]
    specs: list[BlockSpec] = []
    last = len(_STAGES) - 1
    for i, (repeats, k, s, e, cin, cout) in enumerate(_STAGES):
        cin_r, cout_r = round_filters(cin, width), round_filters(cout, width)
        if i == 0:
            cin_r = 32
        n = repeats if i in (0, last) else math.ceil(depth * repeats)
        specs.append(BlockSpec(k, s, e, cin_r, cout_r))
        specs.extend(BlockSpec(k, 1, e, cout_r, cout_r) for _ in range(n - 1))
    return specs


def stage_ends(variant: str) -> list[int]:
    """Index of the last block of each stage."""
    _, depth, _, _ = VARIANTS[variant]
    ends, count, last = [], 0, len(_STAGES) - 1
    for i, (repeats, *_rest) in enumerate(_STAGES):
        count += repeats if i in (0, last) else math.ceil(depth * repeats)
        ends.append(count - 1)
    return ends


def same_pad(size: tuple[int, int], kernel: int, stride: int) -> list[int]:
    """TF "SAME" padding (left, right, top, bottom) for an input of spatial ``size``."""
    pads: list[int] = []
    for dim in (size[1], size[0]):
        total = max((math.ceil(dim / stride) - 1) * stride + kernel - dim, 0)
        pads += [total // 2, total - total // 2]
    return pads


class ConvBNAct(nn.Module):
    """``nn.Conv2d`` (no bias) -> BatchNorm -> ReLU6 (optional); strided convs pad like TF SAME."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        padding = 0 if stride > 1 else kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.pad(x, same_pad((x.shape[-2], x.shape[-1]), self.kernel, self.stride))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (+ skip when shapes match)."""

    def __init__(self, spec: BlockSpec, drop_path: float = 0.0):
        super().__init__()
        mid = spec.in_ch * spec.expand
        self.expand = ConvBNAct(spec.in_ch, mid, 1) if spec.expand != 1 else None
        self.dw = ConvBNAct(mid, mid, spec.kernel, spec.stride, groups=mid)
        self.project = ConvBNAct(mid, spec.out_ch, 1, act=False)
        self.residual = spec.stride == 1 and spec.in_ch == spec.out_ch
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:  # (N, Cin, H, W) -> (N, Cout, H/s, W/s)
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.dw(h))
        if not self.residual:
            return h
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device).add_(keep).floor_()
            h = h / keep * mask
        return h + x


class EfficientNetLite(nn.Module):
    """Stem -> MBConv blocks -> 1x1 head (1280 ch) -> average pool -> ImageNet classifier."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000, drop_path_rate: float = 0.0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: unknown {variant!r}; known: {sorted(VARIANTS)}")
        self.variant = variant
        specs = block_specs(variant)
        self.stem = ConvBNAct(3, 32, 3, 2)
        self.blocks = nn.ModuleList(
            MBConv(s, drop_path_rate * i / len(specs)) for i, s in enumerate(specs)
        )
        self.head = ConvBNAct(specs[-1].out_ch, 1280, 1)
        self.dropout = nn.Dropout(VARIANTS[variant][3])
        self.classifier = nn.Linear(1280, num_classes) if num_classes > 0 else None
        self.stage_ends = stage_ends(variant)
        self.block_channels = [s.out_ch for s in specs]
        strides, acc = [], 2
        for s in specs:
            acc *= s.stride
            strides.append(acc)
        self.block_strides = strides

    def run_blocks(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Blocks ``start`` .. ``stop - 1`` on an already-computed input (stem output for start=0)."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def forward_features(self, x: Tensor, start: int = 0) -> Tensor:
        """(N, 3, H, W) images, or block ``start``'s input -> (N, 1280, H/32, W/32) head map."""
        if start == 0:
            x = self.stem(x)  # (N, 32, H/2, W/2)
        return self.head(self.run_blocks(x, start))

    def pool(self, fmap: Tensor) -> Tensor:
        return fmap.mean(dim=(2, 3))  # (N, 1280)

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, num_classes) logits
        if self.classifier is None:
            raise ValueError("this EfficientNetLite was built without a classifier (num_classes=0)")
        return self.classifier(self.dropout(self.pool(self.forward_features(x))))
