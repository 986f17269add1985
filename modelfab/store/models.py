"""Model registry: register, resolve references (id, name, name@alias, name:version), lineage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.store.schema import TIERS, DatasetVersion, Model, ModelAlias

if TYPE_CHECKING:
    from modelfab.store.store import Store


def register_model(
    store: Store,
    *,
    name: str,
    tier: str,
    task: str,
    arch: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    params: int = 0,
    trainable_params: int = 0,
    weights: str | None = None,
    card: dict[str, Any] | None = None,
    parent: str | None = None,
    dataset_version: int | str | None = None,
) -> Model:
    """Register a model. ``name`` gets the next version; ``parent`` is any model reference.

    The JSON ``card`` (merged with the registry fields) is stored as an artifact beside the weights.
    """
    from modelfab.store.datasets import resolve_version_id

    if tier not in TIERS:
        raise ConfigError(f"tier: must be one of {', '.join(TIERS)}, got {tier!r}")
    if not name or "@" in name or ":" in name or "/" in name:
        raise ConfigError(f"name: {name!r} must be non-empty without '@', ':' or '/'")
    if weights is not None and not store.artifacts.exists(weights):
        raise NotFoundError(f"weights artifact {weights[:12]} is not in the artifact store")
    parent_id = get_model(store, parent).id if parent else None
    dv_id = resolve_version_id(store, dataset_version) if dataset_version is not None else None
    from modelfab.store.store import new_id

    with store.transaction() as s:
        last = s.scalar(select(func.max(Model.version)).where(Model.name == name)) or 0
        model = Model(
            id=new_id("m"),
            name=name,
            version=last + 1,
            tier=tier,
            task=task,
            parent_id=parent_id,
            dataset_version_id=dv_id,
            architecture=arch or {},
            config=config or {},
            metrics=metrics or {},
            params=params,
            trainable_params=trainable_params,
            weights_digest=weights,
        )
        full_card = {
            **(card or {}),
            "id": model.id,
            "name": name,
            "version": model.version,
            "tier": tier,
            "task": task,
            "parent": parent_id,
            "dataset_version": dv_id,
            "architecture": model.architecture,
            "config": model.config,
            "metrics": model.metrics,
            "params": params,
            "trainable_params": trainable_params,
            "weights": weights,
        }
        model.card_digest = store.artifacts.put_json(full_card)
        s.add(model)
    return model


def get_model(store: Store, ref: str) -> Model:
    """Resolve ``ref``: a model id, ``name`` (newest version), ``name:version`` or ``name@alias``."""
    with store.session() as s:
        model: Model | None
        if "@" in ref:
            name, alias = ref.split("@", 1)
            row = s.get(ModelAlias, (name, alias))
            model = s.get(Model, row.model_id) if row else None
        elif ":" in ref:
            name, ver = ref.rsplit(":", 1)
            model = (
                s.scalar(select(Model).where(Model.name == name, Model.version == int(ver))) if ver.isdigit() else None
            )
        else:
            model = s.get(Model, ref) or s.scalar(
                select(Model).where(Model.name == ref).order_by(Model.version.desc()).limit(1)
            )
        if model is None:
            known = ", ".join(s.scalars(select(Model.name).distinct().order_by(Model.name)).all()[:20])
            raise NotFoundError(f"unknown model {ref!r}; known: {known or '(none)'}")
        return model


def list_models(store: Store, tier: str | None = None) -> list[Model]:
    with store.session() as s:
        q = select(Model).order_by(Model.created_at, Model.name, Model.version)
        if tier:
            q = q.where(Model.tier == tier)
        return list(s.scalars(q).all())


def set_alias(store: Store, ref: str, alias: str) -> Model:
    """Point ``name@alias`` at the model ``ref`` (moving it if it existed)."""
    model = get_model(store, ref)
    with store.transaction() as s:
        row = s.get(ModelAlias, (model.name, alias))
        if row is None:
            s.add(ModelAlias(name=model.name, alias=alias, model_id=model.id))
        else:
            row.model_id = model.id
    return model


def update_metrics(store: Store, model_id: str, key: str, value: Any) -> Model:
    """Set ``metrics[key]`` of a model (evaluation results are added after registration)."""
    with store.transaction() as s:
        model = s.get(Model, model_id)
        if model is None:
            raise NotFoundError(f"unknown model {model_id!r}")
        model.metrics = {**(model.metrics or {}), key: value}
    return model


def model_card(store: Store, ref: str) -> dict[str, Any]:
    model = get_model(store, ref)
    if not model.card_digest:
        return {}
    card: dict[str, Any] = store.artifacts.get_json(model.card_digest)
    return card


@dataclass
class LineageNode:
    """A model with its children, for drawing the L0 -> L1 -> L2 tree."""

    model: Model
    dataset: str | None
    children: list[LineageNode] = field(default_factory=list)


def lineage(store: Store, ref: str | None = None) -> list[LineageNode]:
    """The lineage forest, or the tree through ``ref`` (from its root down)."""
    with store.session() as s:
        models = list(s.scalars(select(Model).order_by(Model.created_at)).all())
        versions = {dv.id: f"{dv.dataset.name}@{dv.version}" for dv in s.scalars(select(DatasetVersion)).all()}
    nodes = {m.id: LineageNode(m, versions.get(m.dataset_version_id) if m.dataset_version_id else None) for m in models}
    roots: list[LineageNode] = []
    for node in nodes.values():
        pid = node.model.parent_id
        (nodes[pid].children if pid in nodes else roots).append(node)
    if ref is None:
        return roots
    target = get_model(store, ref)
    top = nodes[target.id]
    while top.model.parent_id in nodes:
        top = nodes[str(top.model.parent_id)]
    return [top]
