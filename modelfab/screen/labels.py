"""Which items are normal (for fitting) and which are defects (for calibration): task label views."""

from __future__ import annotations

from modelfab.core.errors import ConfigError, DataError
from modelfab.data.tasks import TaskView, get_task, task_labels
from modelfab.store.datasets import ItemRow
from modelfab.store.schema import SPLITS, DatasetVersion
from modelfab.store.store import Store


def parse_split(ref: str, default: str | None) -> tuple[str, str | None]:
    """``DATASET@v[:split]`` -> (``DATASET@v``, split or ``default``)."""
    data, _, split = ref.partition(":")
    chosen = split or default
    if chosen is not None and chosen not in SPLITS:
        raise ConfigError(f"unknown split {chosen!r} in {ref!r}; use {', '.join(SPLITS)}")
    return data, chosen


def in_split(rows: list[ItemRow], split: str | None) -> list[ItemRow]:
    """Rows of ``split`` (all rows when ``split`` is None or the version has no split at all)."""
    if split is None or all(r.split is None for r in rows):
        return rows
    return [r for r in rows if r.split == split]


def positive_class(view: TaskView, name: str) -> str:
    if view.positive:
        return view.positive
    if len(view.classes) == 2:
        return view.classes[1]
    raise ConfigError(f"task {name!r} names no positive (defect) class; screening needs a binary task")


def task_view(dv: DatasetVersion, task: str | None, ref: str) -> tuple[str, TaskView] | None:
    """The version's task ``task`` (default its first), or None when it has no tasks."""
    if not dv.tasks:
        if task:
            raise DataError(f"{ref} has no tasks (labels); cannot use task {task!r}")
        return None
    name = task or next(iter(dv.tasks))
    return name, get_task(dv.tasks, name)


def normal_rows(
    store: Store, ref: str, split: str | None, task: str | None
) -> tuple[DatasetVersion, list[ItemRow], str]:
    """Items to fit on and a sentence saying how they were chosen.

    A version with visible labels for its task gives the items of ``split`` whose class is not the
    positive one; an unlabeled version gives every item of ``split``.
    """
    dv = store.get_dataset_version(ref)
    name = f"{dv.dataset.name}@{dv.version}"
    if dv.dataset.modality != "image":
        raise DataError(f"{name} holds {dv.dataset.modality} items; screening needs images")
    rows = in_split(store.version_items(dv.id), split)
    where = f"split {split}" if split and rows and rows[0].split is not None else "all splits"
    picked = task_view(dv, task, name)
    labels = task_labels(rows, picked[1]) if picked else {}
    if picked and labels:
        tname, view = picked
        pos = positive_class(view, tname)
        rows = [r for r in rows if labels.get(r.key) not in (None, pos)]
        rule = f"{len(rows)} items of {name} ({where}) labeled non-{pos} under task {tname}"
    else:
        rule = f"all {len(rows)} items of {name} ({where}); no visible labels, assumed normal"
    if not rows:
        raise DataError(f"no normal items to fit in {name} ({where})")
    return dv, rows, rule


def defect_split(
    store: Store, ref: str, split: str | None, task: str | None
) -> tuple[DatasetVersion, list[ItemRow], list[bool], str]:
    """Labeled items of a calibration split and whether each is a defect (visible labels only)."""
    dv = store.get_dataset_version(ref)
    name = f"{dv.dataset.name}@{dv.version}"
    picked = task_view(dv, task, name)
    if picked is None:
        raise DataError(f"calibration: {name} has no labels; calibration needs labeled defects")
    tname, view = picked
    if not view.positive and len(view.classes) < 2:
        raise DataError(f"calibration: task {tname!r} of {name} has no defect class ({view.classes}); "
                        "calibration needs labeled defects")
    pos = positive_class(view, tname)
    rows = in_split(store.version_items(dv.id), split)
    labels = task_labels(rows, view)
    rows = [r for r in rows if r.key in labels]
    if not rows:
        raise DataError(f"calibration: no visible {tname} labels in {name} split {split}")
    return dv, rows, [labels[r.key] == pos for r in rows], tname
