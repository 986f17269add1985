"""Task data for tuning: the label view of a dataset version, split, with seeded few-shot draws."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modelfab.core.errors import ConfigError, DataError
from modelfab.data.tasks import TaskView, get_task, task_labels
from modelfab.store.datasets import ItemRow
from modelfab.store.schema import DatasetVersion
from modelfab.store.store import Store


@dataclass
class SplitData:
    """Items of one split with class indices."""

    rows: list[ItemRow]
    y: Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class TaskData:
    version: DatasetVersion
    ref: str
    view_name: str
    view: TaskView
    classes: list[str]
    positive: int | None
    modality: str
    splits: dict[str, SplitData] = field(default_factory=dict)

    def split(self, name: str) -> SplitData:
        if name not in self.splits or len(self.splits[name]) == 0:
            raise DataError(f"{self.ref}: no labeled items in split {name!r} for {self.view_name}")
        return self.splits[name]


def seeded_draw(rows: Sequence[ItemRow], n: int, seed: int, purpose: str) -> list[ItemRow]:
    """At most ``n`` of ``rows``, chosen by a keyed hash of (purpose, seed, item key), in key order:
    the same draw on any machine and in any input order; another ``purpose`` draws independently."""
    rank = {r.key: hashlib.sha256(f"{purpose}\x00{seed}\x00{r.key}".encode()).hexdigest() for r in rows}
    return sorted(sorted(rows, key=lambda r: rank[r.key])[:n], key=lambda r: r.key)


def few_shot(rows: list[ItemRow], labels: dict[str, str], classes: list[str], shots: int, seed: int) -> list[ItemRow]:
    """k items per class, chosen by a keyed hash of (seed, key): reproducible and order-free."""
    picked: list[ItemRow] = []
    for cls in classes:
        pool = [r for r in rows if labels.get(r.key) == cls]
        if len(pool) < shots:
            raise DataError(f"class {cls!r} has {len(pool)} labeled train items, fewer than --shots {shots}")
        picked.extend(seeded_draw(pool, shots, seed, "shots"))
    return sorted(picked, key=lambda r: r.key)


def load_task_data(
    store: Store,
    data_ref: str,
    view_name: str | None,
    *,
    shots: int | None = None,
    seed: int = 0,
    ground_truth: bool = False,
) -> TaskData:
    """Resolve ``data_ref`` and its label view into per-split items with class indices.

    ``ground_truth`` reads hidden labels (oracles and benchmarks only).
    """
    dv = store.get_dataset_version(data_ref)
    ref = f"{dv.dataset.name}@{dv.version}"
    if not dv.tasks:
        raise DataError(f"{ref} has no labels (no task); import labels first")
    name = view_name or next(iter(dv.tasks))
    view = get_task(dv.tasks, name)
    rows = store.version_items(dv.id, include_hidden=ground_truth)
    labels = task_labels(rows, view, ground_truth=ground_truth)
    if not labels:
        raise DataError(f"{ref}: task {name!r} has no visible labels (imported --unlabeled?)")
    classes = list(view.classes) or sorted(set(labels.values()))
    outside = sorted(set(labels.values()) - set(classes))
    if outside:
        raise DataError(f"{ref}: labels outside the schema of {name!r}: {outside}; classes: {classes}")
    present = sorted(set(labels.values()))
    if len(present) < 2:
        raise DataError(f"{ref}: task {name!r} has a single class ({present}); tuning needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    positive = index[view.positive] if view.positive in index else (1 if len(classes) == 2 else None)
    data = TaskData(dv, ref, name, view, classes, positive, dv.dataset.modality)
    for split in ("train", "val", "calibration", "test"):
        chosen = [r for r in rows if r.split == split and r.key in labels]
        if split == "train" and shots is not None:
            chosen = few_shot(chosen, labels, classes, shots, seed)
        y = torch.tensor([index[labels[r.key]] for r in chosen], dtype=torch.long)
        data.splits[split] = SplitData(chosen, y)
    if len(data.splits["train"]) == 0:
        raise DataError(f"{ref}: no labeled train items for {name!r}")
    return data


def item_inputs(store: Store, rows: list[ItemRow], modality: str) -> list[Any]:
    """Raw model inputs of ``rows``: uint8 RGB arrays for images, strings for text."""
    if modality == "text":
        return [r.text or "" for r in rows]
    if modality != "image":
        raise ConfigError(f"unsupported modality {modality!r}")
    from modelfab.data.images import load_rgb

    return [load_rgb(store.artifacts.local_path(r.content_hash)) for r in rows]
