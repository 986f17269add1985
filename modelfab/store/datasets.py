"""Dataset versions: immutable, content-hashed snapshots of items, labels and splits."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.store.schema import SPLITS, Dataset, DatasetVersion, Item, Label, VersionItem

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from modelfab.store.store import Store


@dataclass(frozen=True)
class ItemSpec:
    """An item to put in a version. ``content_hash`` is the artifact digest (images) or text hash."""

    key: str
    content_hash: str
    text: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class VersionSpec:
    """Everything a new version holds. ``hidden`` labels are ground truth kept out of training."""

    items: Sequence[ItemSpec]
    labels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hidden: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    splits: Mapping[str, str] = field(default_factory=dict)
    tasks: Mapping[str, Any] = field(default_factory=dict)
    label_schema: Mapping[str, Any] = field(default_factory=dict)
    split_info: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass
class ItemRow:
    """An item as seen in one version."""

    key: str
    content_hash: str
    split: str | None
    labels: dict[str, Any]
    hidden: dict[str, Any]
    text: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def version_hash(spec: VersionSpec) -> str:
    """Content hash of a version: items, labels, hidden labels, splits, tasks and schema."""
    h = hashlib.sha256()
    for item in sorted(spec.items, key=lambda i: i.key):
        row = [
            item.key,
            item.content_hash,
            spec.splits.get(item.key),
            dict(sorted(spec.labels.get(item.key, {}).items())),
            dict(sorted(spec.hidden.get(item.key, {}).items())),
        ]
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
        h.update(b"\n")
    h.update(json.dumps([spec.tasks, spec.label_schema], sort_keys=True, default=str).encode())
    return h.hexdigest()


def _validate(spec: VersionSpec) -> None:
    keys = [i.key for i in spec.items]
    if not keys:
        raise DataError("a dataset version needs at least one item")
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    if dupes:
        raise DataError(f"duplicate item keys: {', '.join(dupes[:5])}")
    known = set(keys)
    for what, mapping in (("labels", spec.labels), ("hidden labels", spec.hidden), ("splits", spec.splits)):
        missing = [k for k in mapping if k not in known]
        if missing:
            raise DataError(f"{what} name {len(missing)} unknown items, e.g. {', '.join(missing[:3])}")
    bad = {s for s in spec.splits.values() if s not in SPLITS}
    if bad:
        raise DataError(f"unknown split names {sorted(bad)}; use {', '.join(SPLITS)}")


def create_version(
    store: Store, dataset: str, modality: str, spec: VersionSpec, parent: int | None = None
) -> tuple[DatasetVersion, bool]:
    """Create the next version of ``dataset`` (created if new). Returns (version, created).

    All rows are written in one transaction: a killed process leaves no partial version. A spec
    whose content hash equals an existing version of the dataset returns that version unchanged.
    """
    _validate(spec)
    digest = version_hash(spec)
    with store.transaction() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == dataset))
        if ds is None:
            ds = Dataset(name=dataset, modality=modality)
            s.add(ds)
            s.flush()
        elif ds.modality != modality:
            raise DataError(f"dataset {dataset!r} holds {ds.modality} items, not {modality}")
        if ds.id is None:
            raise DataError("dataset id missing after flush")
        existing = s.scalar(
            select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id, DatasetVersion.content_hash == digest)
        )
        if existing is not None:
            return existing, False
        number = (s.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == ds.id)) or 0) + 1
        if parent is None and number > 1:
            parent = s.scalar(
                select(DatasetVersion.id).where(
                    DatasetVersion.dataset_id == ds.id, DatasetVersion.version == number - 1
                )
            )
        dv = DatasetVersion(
            dataset_id=ds.id,
            version=number,
            content_hash=digest,
            parent_id=parent,
            message=spec.message,
            label_schema=dict(spec.label_schema),
            tasks=dict(spec.tasks),
            split_info=dict(spec.split_info),
            item_count=len(spec.items),
        )
        s.add(dv)
        s.flush()
        item_ids = _upsert_items(s, ds.id, spec.items)
        s.execute(
            insert(VersionItem),
            [{"version_id": dv.id, "item_id": item_ids[i.key], "split": spec.splits.get(i.key)} for i in spec.items],
        )
        label_rows = [
            {"version_id": dv.id, "item_id": item_ids[k], "field": f, "value": v, "hidden": hidden}
            for hidden, mapping in ((False, spec.labels), (True, spec.hidden))
            for k, fields in mapping.items()
            for f, v in fields.items()
        ]
        if label_rows:
            s.execute(insert(Label), label_rows)
    return dv, True


def _upsert_items(s: Session, dataset_id: int, items: Sequence[ItemSpec]) -> dict[str, int]:
    existing = {
        (key, digest): iid
        for iid, key, digest in s.execute(
            select(Item.id, Item.key, Item.content_hash).where(Item.dataset_id == dataset_id)
        ).all()
    }
    ids: dict[str, int] = {}
    new = []
    for i in items:
        iid = existing.get((i.key, i.content_hash))
        if iid is None:
            new.append(i)
        else:
            ids[i.key] = iid
    if new:
        rows = s.execute(
            insert(Item).returning(Item.id, Item.key, sort_by_parameter_order=True),
            [
                {
                    "dataset_id": dataset_id,
                    "key": i.key,
                    "content_hash": i.content_hash,
                    "text": i.text,
                    "width": i.width,
                    "height": i.height,
                    "mode": i.mode,
                    "meta": dict(i.meta),
                }
                for i in new
            ],
        ).all()
        ids.update({key: iid for iid, key in rows})
    return ids


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` -> (name, None); ``name@3`` -> (name, 3)."""
    name, _, ver = ref.partition("@")
    if not name:
        raise ConfigError(f"dataset reference {ref!r} has no name")
    if not ver:
        return name, None
    if not ver.isdigit():
        raise ConfigError(f"dataset version in {ref!r} must be a number")
    return name, int(ver)


def get_version(store: Store, ref: str | int) -> DatasetVersion:
    """Resolve ``name``, ``name@version`` or a version id to a DatasetVersion (with its dataset)."""
    with store.session() as s:
        if isinstance(ref, int):
            dv = s.get(DatasetVersion, ref)
            if dv is None:
                raise NotFoundError(f"unknown dataset version id {ref}")
            _ = dv.dataset
            return dv
        name, ver = parse_ref(ref)
        ds = s.scalar(select(Dataset).where(Dataset.name == name))
        if ds is None:
            known = ", ".join(s.scalars(select(Dataset.name).order_by(Dataset.name)).all()[:20])
            raise NotFoundError(f"unknown dataset {name!r}; known: {known or '(none)'}")
        q = select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
        q = q.where(DatasetVersion.version == ver) if ver else q.order_by(DatasetVersion.version.desc())
        found = s.scalars(q.limit(1)).first()
        if found is None:
            raise NotFoundError(f"dataset {name!r} has no version {ver}")
        _ = found.dataset
        return found


def resolve_version_id(store: Store, ref: int | str) -> int:
    return get_version(store, ref).id


def version_items(store: Store, ref: str | int, *, include_hidden: bool = False) -> list[ItemRow]:
    """The items of a version with their split and labels, ordered by key.

    Hidden ground truth is returned only when ``include_hidden`` is set (oracles and benchmarks).
    """
    dv = get_version(store, ref)
    with store.session() as s:
        rows = s.execute(
            select(Item, VersionItem.split)
            .join(VersionItem, VersionItem.item_id == Item.id)
            .where(VersionItem.version_id == dv.id)
            .order_by(Item.key)
        ).all()
        labels = s.execute(
            select(Label.item_id, Label.field, Label.value, Label.hidden).where(Label.version_id == dv.id)
        ).all()
    by_item: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for item_id, fld, value, hidden in labels:
        visible, secret = by_item.setdefault(item_id, ({}, {}))
        (secret if hidden else visible)[fld] = value
    out = []
    for item, split in rows:
        visible, secret = by_item.get(item.id, ({}, {}))
        out.append(
            ItemRow(
                key=item.key,
                content_hash=item.content_hash,
                split=split,
                labels=visible,
                hidden=secret if include_hidden else {},
                text=item.text,
                width=item.width,
                height=item.height,
                mode=item.mode,
                meta=dict(item.meta or {}),
            )
        )
    return out


def spec_from_version(store: Store, ref: str | int) -> tuple[DatasetVersion, VersionSpec]:
    """A mutable copy of a version's content, to derive the next version from."""
    dv = get_version(store, ref)
    rows = version_items(store, dv.id, include_hidden=True)
    spec = VersionSpec(
        items=[ItemSpec(r.key, r.content_hash, r.text, r.width, r.height, r.mode, r.meta) for r in rows],
        labels={r.key: dict(r.labels) for r in rows if r.labels},
        hidden={r.key: dict(r.hidden) for r in rows if r.hidden},
        splits={r.key: r.split for r in rows if r.split},
        tasks=dict(dv.tasks),
        label_schema=dict(dv.label_schema),
        split_info=dict(dv.split_info),
    )
    return dv, spec


def list_datasets(store: Store) -> list[tuple[Dataset, DatasetVersion | None]]:
    """Every dataset with its newest version."""
    with store.session() as s:
        out = []
        for ds in s.scalars(select(Dataset).order_by(Dataset.name)).all():
            latest = s.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.dataset_id == ds.id)
                .order_by(DatasetVersion.version.desc())
                .limit(1)
            ).first()
            out.append((ds, latest))
        return out


def list_versions(store: Store, name: str) -> list[DatasetVersion]:
    dv = get_version(store, name)
    with store.session() as s:
        return list(
            s.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.dataset_id == dv.dataset_id)
                .order_by(DatasetVersion.version)
            ).all()
        )
