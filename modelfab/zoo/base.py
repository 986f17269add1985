"""The backbone protocols (one per modality) and their save/load through the artifact store.

A backbone wraps a plain ``nn.Module`` (``backbone.module``) with its preprocessing and an input
spec.  Its weights are saved as safetensors (``module.state_dict()``) plus a JSON card that names
the catalog builder and its config, so :func:`load_backbone` rebuilds the architecture without the
pretrained weights and then loads the stored ones.  Small non-weight files a builder needs to
rebuild (tokenizer, HF ``config.json``) travel in the card as artifact digests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from modelfab.core.errors import DataError

Modality = Literal["vision", "text", "lm"]


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects: modality plus image geometry or token limits."""

    modality: Modality
    image_size: int | None = None  # vision: square side in pixels after resizing
    channels: int | None = None  # vision: channels fed to the network (grayscale is repeated)
    mean: tuple[float, ...] | None = None  # vision: normalisation, applied to x / 255
    std: tuple[float, ...] | None = None
    max_length: int | None = None  # text / lm: tokens per item after truncation
    languages: tuple[str, ...] = ()  # text / lm: languages the vocabulary covers well

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std", "languages"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass(frozen=True)
class Source:
    """Where a backbone's pretrained weights come from (shown on its card)."""

    package: str
    version: str
    licence: str
    weights: str  # file name or description of the weights inside the package
    trained_on: str = ""
    url: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@runtime_checkable
class Backbone(Protocol):
    """What every backbone offers, whatever its modality."""

    name: str  # catalog builder name
    config: dict[str, Any]  # builder config (JSON-able), enough to rebuild the architecture
    input_spec: InputSpec
    embed_dim: int
    module: nn.Module  # the torch network whose state_dict is the backbone's weights
    source: Source

    def preprocess(self, items: Sequence[Any]) -> Any:
        """Raw items (images / strings) -> a model-ready batch."""
        ...

    def embed(self, batch: Any) -> Tensor:
        """A preprocessed batch -> (N, D) embeddings."""
        ...

    def features(self, batch: Any, names: Iterable[str] | None = None) -> dict[str, Tensor]:
        """A preprocessed batch -> named intermediate maps (vision: (N, C, h, w); text: (N, T, C)),
        only those in ``names`` when given."""
        ...


class VisionBackbone(Backbone, Protocol):
    """Images -> (N, 3, S, S) float batches -> embeddings and multi-scale feature maps."""

    feature_info: dict[str, dict[str, int]]  # name -> {"channels": C, "stride": s}

    def preprocess(self, items: Sequence[Any]) -> Tensor: ...


class TextBackbone(Backbone, Protocol):
    """Strings -> token batches (dict of tensors) -> sentence embeddings and token states."""

    def preprocess(self, items: Sequence[Any]) -> dict[str, Tensor]: ...


def num_parameters(backbone: Backbone, trainable_only: bool = False) -> int:
    """Parameter count of the backbone's module (all, or those with ``requires_grad``)."""
    params = backbone.module.parameters()
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


@dataclass
class BackboneCard:
    """The JSON card stored next to a backbone's safetensors."""

    builder: str
    config: dict[str, Any]
    modality: str
    embed_dim: int
    input_spec: dict[str, Any]
    source: dict[str, str]
    params: int
    files: dict[str, str] = field(default_factory=dict)  # extra file name -> artifact digest
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneCard:
        missing = [k for k in ("builder", "config", "modality", "embed_dim") if k not in data]
        if missing:
            raise DataError(f"backbone card lacks {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("input_spec", {})
        known.setdefault("source", {})
        known.setdefault("params", 0)
        return cls(**known)


def card_of(backbone: Backbone) -> BackboneCard:
    """The card describing ``backbone`` (without extra files)."""
    return BackboneCard(
        builder=backbone.name,
        config=dict(backbone.config),
        modality=backbone.input_spec.modality,
        embed_dim=backbone.embed_dim,
        input_spec=backbone.input_spec.to_dict(),
        source=backbone.source.to_dict(),
        params=num_parameters(backbone),
    )


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run under ``inference_mode`` with ``module`` in eval mode, restoring its mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        module.train(was_training)


def embed_items(backbone: Backbone, items: Sequence[Any], batch_size: int = 32) -> Tensor:
    """Preprocess and embed ``items`` in batches, in eval mode without gradients -> (N, D)."""
    if len(items) == 0:
        raise DataError("nothing to embed: the item list is empty")
    out: list[Tensor] = []
    with evaluating(backbone.module):
        for start in range(0, len(items), batch_size):
            batch = backbone.preprocess(items[start : start + batch_size])
            out.append(backbone.embed(batch).float())
    return torch.cat(out)
