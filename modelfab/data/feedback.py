"""The feedback loop: served corrections -> the next version of the model's training dataset.

``ingest_feedback`` takes the un-ingested corrections of a deployment (and, when asked, the
low-confidence cases a reviewer labelled), turns each into an item of the dataset the model was
trained on (an existing item with the same content is relabelled; a new input becomes a ``train``
item ``feedback/<hash>`` built from the stored upload), creates the next version with the parent set
to the newest version in the deployment's lineage and a message naming the deployment, and marks
the feedback rows ingested, all in one transaction.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelfab.core.errors import DataError, NotFoundError
from modelfab.data.splits import split_hash
from modelfab.data.tasks import TaskView, get_task
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version, spec_from_version
from modelfab.store.models import model_card
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.schema import DatasetVersion, Deployment, Feedback, Model
from modelfab.store.store import Store

EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif"}


@dataclass
class IngestResult:
    """The new (or unchanged) version and what went into it."""

    dataset: str
    version: DatasetVersion
    created: bool
    added: int  # new items
    relabelled: int  # existing items whose label changed
    ingested: int  # feedback rows marked ingested
    skipped: dict[str, int]  # reason -> rows left un-ingested

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.version.version}"


class _Joined:
    """A store view whose ``transaction()`` is an already-open session (one transaction for all writes)."""

    def __init__(self, store: Store, session: Session) -> None:
        self._store, self._session = store, session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        yield self._session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def class_value(view: TaskView, cls: str, values: list[Any]) -> Any:
    """A label-field value the view reads as ``cls`` (the inverse of :meth:`TaskView.label_of`).

    ``value`` rule: the class itself; ``map``: the first mapped value; ``threshold``: an observed
    value of that class (the smallest for the lower class, the largest for the upper), else the
    threshold itself or a value below it.
    """
    if view.rule == "value":
        return cls
    if view.rule == "map":
        for vc in view.mapping:
            if vc.name == cls:
                return vc.value
        raise DataError(f"class {cls!r} is not in the task's mapping")
    if cls not in view.classes or view.threshold is None:
        raise DataError(f"class {cls!r} is not a class of the task ({view.classes})")
    upper = cls == view.classes[1]
    seen = [float(v) for v in values if isinstance(v, int | float) and view.label_of(v) == cls]
    if seen:
        return max(seen) if upper else min(seen)
    return view.threshold if upper else view.threshold - 1.0


def _source_model(store: Store, model_id: str) -> tuple[Model, dict[str, Any]]:
    model = store.get_model(model_id)
    card = model_card(store, model.id)
    if "exported" in card:
        model = store.get_model(str(card["exported"]["source"]))
        card = model_card(store, model.id)
    if "scenario" not in card:
        raise DataError(f"model {model.name}:{model.version} has no scenario card (label view unknown)")
    return model, card["scenario"]


def _base_version(store: Store, dep: Deployment, model: Model) -> int:
    """The newest version in this deployment's lineage (earlier ingests included), else the model's."""
    if model.dataset_version_id is None:
        raise DataError(f"model {model.name}:{model.version} records no training dataset version")
    with store.session() as s:
        done = s.scalars(
            select(Feedback.ingested_version_id).where(
                Feedback.deployment_id == dep.id, Feedback.ingested_version_id.is_not(None)
            )
        ).all()
    return max([model.dataset_version_id, *[int(v) for v in done if v is not None]])


def _item(store: Store, digest: str, modality: str) -> ItemSpec:
    data = store.artifacts.get_bytes(digest)
    if modality == "text":
        return ItemSpec(f"feedback/{digest[:16]}", digest, text=data.decode())
    with Image.open(io.BytesIO(data)) as im:
        ext = EXTENSIONS.get(str(im.format), ".img")
        return ItemSpec(f"feedback/{digest[:16]}{ext}", digest, width=im.width, height=im.height, mode=im.mode)


def ingest_feedback(store: Store, deployment: str, *, include_low_confidence_reviewed: bool = False) -> IngestResult:
    """Build the next dataset version from deployment ``deployment``'s feedback (see module doc)."""
    with store.session() as s:
        dep = s.get(Deployment, deployment)
        if dep is None:
            raise NotFoundError(f"unknown deployment {deployment!r}; see: modelfab deployments list")
        kinds = ["correction", "low-confidence"] if include_low_confidence_reviewed else ["correction"]
        rows = list(s.scalars(
            select(Feedback).where(Feedback.deployment_id == dep.id, Feedback.ingested_version_id.is_(None),
                                   Feedback.kind.in_(kinds)).order_by(Feedback.id)
        ).all())
    model, info = _source_model(store, dep.model_id)
    base, spec = spec_from_version(store, _base_version(store, dep, model))
    view = get_task(base.tasks, str(info["labels"]))
    modality = base.dataset.modality
    by_hash = {item.content_hash: item.key for item in spec.items}
    values = [fields.get(view.field) for fields in spec.labels.values()]
    labels = {k: dict(v) for k, v in spec.labels.items()}
    items, splits = list(spec.items), dict(spec.splits)
    original = {i.key for i in spec.items}
    skipped: dict[str, int] = {}
    used: list[int] = []
    added = relabelled = 0
    for row in rows:
        cls = (row.correction or {}).get("label")
        if cls is None:
            reason = "no label (not reviewed)" if row.kind == "low-confidence" else "no label (wrong, not binary)"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        key = by_hash.get(row.input_hash)
        if key is None:
            if not store.artifacts.exists(row.input_hash):
                skipped["input not stored"] = skipped.get("input not stored", 0) + 1
                continue
            item = _item(store, row.input_hash, modality)
            items.append(item)
            splits[item.key] = "train"
            by_hash[row.input_hash] = key = item.key
            added += 1
        value = class_value(view, str(cls), values)
        if key in original and labels.get(key, {}).get(view.field) != value:
            relabelled += 1
        labels.setdefault(key, {})[view.field] = value
        used.append(row.id)
    if not used:
        raise DataError(f"deployment {dep.id}: no un-ingested feedback with a label ({sum(skipped.values())} skipped)")
    name = base.dataset.name
    split_info = {**spec.split_info, "hash": split_hash(splits), "feedback": dep.id}
    new_spec = VersionSpec(items=items, labels=labels, hidden=spec.hidden, splits=splits, tasks=spec.tasks,
                           label_schema=spec.label_schema, split_info=split_info,
                           message=f"feedback from deployment {dep.id} ({model.name}:{model.version}): "
                                   f"{len(used)} corrections, {added} new items")
    config = {"deployment": dep.id, "base": f"{name}@{base.version}", "low_confidence": include_low_confidence_reviewed}
    with (
        tracked_run(store, "ingest-feedback", config=config, inputs={"deployment": dep.id}) as run,
        store.transaction() as s,
    ):
        dv, created = create_version(cast(Store, _Joined(store, s)), name, modality, new_spec, parent=base.id)
        s.execute(update(Feedback).where(Feedback.id.in_(used)).values(ingested_version_id=dv.id))
    finish_run(store, run.id, outputs={"dataset": f"{name}@{dv.version}", "created": created},
               metrics={"ingested": len(used), "added": added, "relabelled": relabelled})
    return IngestResult(name, dv, created, added, relabelled, len(used), skipped)
