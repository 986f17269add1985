"""Register backbones in the model registry (L0 / L1) and load a registered one back.

The registered model's card carries the backbone card under ``"backbone"``; its weights digest is
the safetensors of ``backbone.module.state_dict()``.  Any model whose card has that key (L0 from
the zoo, L1 from ``adapt``) loads with :func:`load_registered`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.zoo.base import Backbone, num_parameters
from modelfab.zoo.catalog import BACKBONES, build_backbone
from modelfab.zoo.storage import load_backbone, save_backbone

if TYPE_CHECKING:
    from modelfab.store.schema import Model
    from modelfab.store.store import Store

FOUNDATION_TASK = "foundation"


def backbone_arch(backbone: Backbone) -> dict[str, Any]:
    """The ``arch`` dict stored with a registered backbone."""
    return {
        "builder": backbone.name,
        "modality": backbone.input_spec.modality,
        "embed_dim": backbone.embed_dim,
        "input_spec": backbone.input_spec.to_dict(),
        "features": dict(getattr(backbone, "feature_info", {}) or {}),
    }


def register_backbone(
    store: Store,
    backbone: Backbone,
    *,
    name: str,
    tier: str,
    task: str = FOUNDATION_TASK,
    parent: str | None = None,
    dataset_version: int | str | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    card: dict[str, Any] | None = None,
    trainable_params: int | None = None,
) -> Model:
    """Save ``backbone`` to the artifact store and register it as a model of ``tier``."""
    saved = save_backbone(backbone, store.artifacts)
    full_card = {
        **(card or {}),
        "backbone": saved.card_data,
        "backbone_card": saved.card,
        "source": backbone.source.to_dict(),
        "licence": backbone.source.licence,
        "input_spec": backbone.input_spec.to_dict(),
    }
    params = num_parameters(backbone)
    return store.register_model(
        name=name, tier=tier, task=task, arch=backbone_arch(backbone),
        config=config if config is not None else dict(backbone.config), metrics=metrics or {},
        params=params, trainable_params=params if trainable_params is None else trainable_params,
        weights=saved.weights, card=full_card, parent=parent, dataset_version=dataset_version,
    )


def register_foundation(store: Store, builder: str, *, name: str | None = None, **overrides: Any) -> tuple[Model, bool]:
    """Build the zoo entry ``builder`` and register it as L0 (idempotent: the same weights and name
    return the existing model).  Returns (model, created)."""
    from modelfab.store.models import list_models

    if builder == "local" and "path" not in overrides:
        raise ConfigError("path: 'local' needs --path to a model folder or checkpoint")
    backbone = build_backbone(builder, **overrides)
    target = name or builder
    saved_digest = _weights_digest(backbone)
    for model in list_models(store, "L0"):
        if model.name == target and model.weights_digest == saved_digest:
            return model, False
    model = register_backbone(store, backbone, name=target, tier="L0",
                              card={"summary": BACKBONES.entry(builder).summary})
    return model, True


def _weights_digest(backbone: Backbone) -> str:
    """The digest :func:`save_backbone` would store for ``backbone``'s weights."""
    from modelfab.store.artifacts import ArtifactStore, sha256_bytes
    from modelfab.zoo.storage import untie

    state, _ = untie(backbone.module.state_dict())
    return sha256_bytes(ArtifactStore.tensors_bytes(state, {"builder": backbone.name}))


def load_registered(store: Store, ref: str) -> tuple[Backbone, Model]:
    """The backbone of a registered model (L0 or L1) and its registry row."""
    from modelfab.store.models import model_card

    model = store.get_model(ref)
    card = model_card(store, model.id)
    if "backbone" not in card or not model.weights_digest:
        raise DataError(f"model {ref!r} ({model.tier}, task {model.task}) is not a backbone: no backbone card")
    return load_backbone(store.artifacts, model.weights_digest, card["backbone"]), model


def load_base(store: Store, ref: str) -> tuple[Backbone, Model]:
    """:func:`load_registered` for a base that a run (tune, adapt) starts from: an L0 or L1. An
    unknown ``ref`` that names a zoo backbone gets the command that registers it."""
    try:
        model = store.get_model(ref)
    except NotFoundError as exc:
        hint = f"; register it first: modelfab models add-foundation {ref}" if ref in BACKBONES else ""
        raise NotFoundError(f"base: {exc}{hint}") from None
    if model.tier not in ("L0", "L1"):
        raise ConfigError(f"base: {ref!r} is an {model.tier} model (task {model.task}); start from an L0 or L1")
    return load_registered(store, model.id)
