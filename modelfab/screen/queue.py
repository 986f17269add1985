"""``label queue``: the next batch to label, chosen by a selector and exported for a labeling tool.

The pool is the items of one split without a visible label for the task (or field); the labeled
set is the items of the same split that have one (labels of other splits, e.g. test, are never
used).  Class probabilities come from the L2 given with ``model``; without one, an uncertainty
selector gets them from a logistic-regression probe fitted on the labeled items' embeddings.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfab.core.errors import ConfigError, DataError
from modelfab.data.labels_io import FORMATS, format_labels
from modelfab.data.tasks import TaskView, get_task, task_labels
from modelfab.screen.embeddings import embedding_source
from modelfab.screen.probe import probe_probabilities
from modelfab.screen.select import Pool, build_selector
from modelfab.store.datasets import ItemRow
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.store import Store


@dataclass
class QueuedItem:
    rank: int
    key: str
    split: str | None
    score: float | None  # the selector's criterion at this pick (None: undefined, e.g. the first k-center)
    suggested: str | None = None  # the model's most likely class, when probabilities are known
    confidence: float | None = None


@dataclass
class QueueResult:
    dataset: str
    task: str | None
    label_field: str
    selector: str
    criterion: str
    probabilities: str  # where the class probabilities came from: "model", "probe" or "none"
    pool: int
    labeled: int
    items: list[QueuedItem] = field(default_factory=list)
    out: str | None = None
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def label_view(tasks: dict[str, Any], task: str | None) -> tuple[str | None, TaskView]:
    """The task view to read labels with: ``task``, else the version's first task, else field ``label``."""
    if task:
        return task, get_task(tasks, task)
    if tasks:
        name = next(iter(tasks))
        return name, get_task(tasks, name)
    return None, TaskView(field="label")


def normalise_format(fmt: str) -> str:
    """``labelstudio`` / ``label-studio`` / ``csv`` -> the labels_io format name."""
    name = {"labelstudio": "label-studio", "ls": "label-studio"}.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise ConfigError(f"format: unknown label format {fmt!r}; use labelstudio or csv")
    return name


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def label_queue(
    store: Store,
    data: str,
    *,
    budget: int,
    selector: str = "diversity",
    selector_config: dict[str, Any] | None = None,
    split: str = "train",
    task: str | None = None,
    model: str | None = None,
    backbone: str | None = None,
    seed: int = 0,
    out: Path | None = None,
    fmt: str = "label-studio",
) -> QueueResult:
    """Choose the next ``budget`` items to label and (optionally) export them to ``out``."""
    fmt = normalise_format(fmt)
    chooser = build_selector(selector, selector_config)
    dv = store.get_dataset_version(data)
    ref = f"{dv.dataset.name}@{dv.version}"
    task_name, view = label_view(dv.tasks, task)
    rows = [r for r in store.version_items(dv.id) if split == "all" or r.split == split]
    if not rows:
        raise DataError(f"{ref} has no items in split {split!r}")
    labels = task_labels(rows, view)
    pool_rows = [r for r in rows if r.key not in labels]
    lab_rows = [r for r in rows if r.key in labels]
    if not pool_rows:
        raise DataError(f"{ref}: every item of split {split!r} is labeled for {task_name or view.field}")
    config = {
        "selector": selector,
        "selector_config": chooser.cfg.model_dump(),
        "budget": budget,
        "split": split,
        "task": task_name,
        "seed": seed,
        "format": fmt,
    }
    inputs = {"data": ref, "model": model, "backbone": backbone}
    with tracked_run(store, "label-queue", config=config, inputs=inputs) as run:
        source = embedding_source(store, dv.dataset.modality, model=model, backbone=backbone)
        emb = source.embed(pool_rows + lab_rows)  # (N + M, D)
        x_pool, x_lab = emb[: len(pool_rows)], emb[len(pool_rows) :]
        needs = chooser.needs_probabilities
        classes, probs, origin = _probabilities(source, view, labels, lab_rows, x_lab, pool_rows, x_pool, needs)
        picked = chooser.select(Pool(x_pool, probs, x_lab), budget, seed)
        items = [
            QueuedItem(
                rank + 1,
                pool_rows[i].key,
                pool_rows[i].split,
                float(s) if np.isfinite(s) else None,
                classes[int(probs[i].argmax())] if probs is not None and classes else None,
                float(probs[i].max()) if probs is not None else None,
            )
            for rank, (i, s) in enumerate(zip(picked.indices.tolist(), picked.scores.tolist(), strict=True))
        ]
        result = QueueResult(
            ref,
            task_name,
            view.field,
            selector,
            picked.criterion,
            origin,
            len(pool_rows),
            len(lab_rows),
            items,
            str(out) if out else None,
            run.id,
        )
        if out is not None:
            chosen = [pool_rows[i] for i in picked.indices.tolist()]
            write_atomic(out, format_labels(chosen, fmt, field=view.field, columns=[view.field]))
    finish_run(
        store,
        run.id,
        outputs={"keys": [i.key for i in items], "out": result.out, "embeddings": source.model_id},
        metrics={"pool": len(pool_rows), "labeled": len(lab_rows), "budget": budget, "probabilities": origin},
    )
    return result


def _probabilities(
    source: Any,
    view: TaskView,
    labels: dict[str, str],
    lab_rows: list[ItemRow],
    x_lab: np.ndarray,
    pool_rows: list[ItemRow],
    x_pool: np.ndarray,
    needed: bool,
) -> tuple[list[str], np.ndarray | None, str]:
    """(classes, (N, C) pool probabilities or None, origin)."""
    probs = source.probabilities(x_pool, pool_rows)
    if probs is not None:
        return list(source.classes or []), probs, "model"
    classes = list(view.classes) + sorted(set(labels.values()) - set(view.classes))
    if not needed:
        return classes, None, "none"
    present = {labels[r.key] for r in lab_rows}
    if len(present) < 2:
        raise ConfigError(
            f"this selector needs class probabilities: give --model (an L2), or label items of two classes "
            f"first (labeled in this split: {len(lab_rows)}); for a cold start use --selector diversity"
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[labels[r.key]] for r in lab_rows])
    return classes, probe_probabilities(x_lab, y, x_pool, len(classes)), "probe"
