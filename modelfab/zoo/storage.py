"""Save a backbone into the artifact store (safetensors + JSON card) and load it back."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from modelfab.core.errors import DataError
from modelfab.store.artifacts import ArtifactStore
from modelfab.zoo.base import Backbone, BackboneCard, card_of
from modelfab.zoo.catalog import build_backbone


@dataclass(frozen=True)
class SavedBackbone:
    """Digests of a stored backbone: its weights (safetensors) and its card (JSON)."""

    weights: str
    card: str
    card_data: dict[str, Any]


def save_backbone(
    backbone: Backbone,
    artifacts: ArtifactStore,
    *,
    extra: Mapping[str, Any] | None = None,
) -> SavedBackbone:
    """Store ``backbone.module.state_dict()`` as safetensors plus its card; returns the digests.

    Builders that need files besides the weights to rebuild (tokenizers, HF configs) expose
    ``rebuild_files() -> dict[name, bytes]``; those are stored too and listed in the card.
    """
    state, tied = untie(backbone.module.state_dict())
    card = card_of(backbone)
    files_fn = getattr(backbone, "rebuild_files", None)
    if callable(files_fn):
        card.files = {name: artifacts.put_bytes(data) for name, data in files_fn().items()}
    card.extra = dict(extra or {})
    if tied:
        card.extra["tied"] = tied
    weights = artifacts.put_tensors(state, metadata={"builder": backbone.name})
    card_dict = card.to_dict()
    card_dict["weights"] = weights
    return SavedBackbone(weights=weights, card=artifacts.put_json(card_dict), card_data=card_dict)


def untie(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier one (tied embeddings): safetensors refuses
    shared tensors.  Returns the kept state and dropped key -> kept key."""
    kept: dict[str, Tensor] = {}
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    tied: dict[str, str] = {}
    for key, value in state.items():
        ident = (value.untyped_storage().data_ptr(), tuple(value.shape)) if value.numel() else None
        if ident is not None and ident in seen:
            tied[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        kept[key] = value
    return kept, tied


def load_backbone(artifacts: ArtifactStore, weights: str, card: Mapping[str, Any] | str) -> Backbone:
    """Rebuild the architecture named by ``card`` (a dict or its digest) and load ``weights``."""
    card_data = artifacts.get_json(card) if isinstance(card, str) else dict(card)
    parsed = BackboneCard.from_dict(card_data)
    config = dict(parsed.config)
    if "pretrained" in config:
        config["pretrained"] = False
    with tempfile.TemporaryDirectory(prefix="modelfab-bb-") as tmp:
        if parsed.files:
            for name, digest in parsed.files.items():
                target = Path(tmp) / name
                if not target.resolve().is_relative_to(Path(tmp).resolve()):
                    raise DataError(f"backbone card names a file outside its folder: {name!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(artifacts.get_bytes(digest))
            config["rebuild_dir"] = tmp
        backbone = build_backbone(parsed.builder, **config)
        state = artifacts.get_tensors(weights)
        try:
            result = backbone.module.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            detail = str(exc).splitlines()[-1].strip()
            raise DataError(f"stored weights do not fit {parsed.builder}: {detail}") from None
        tied = set(parsed.extra.get("tied", {}))
        missing = [k for k in result.missing_keys if k not in tied]
        if missing or result.unexpected_keys:
            raise DataError(
                f"stored weights do not fit {parsed.builder}: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
    backbone.module.eval()
    return backbone
