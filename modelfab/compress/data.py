"""Inputs for parity, calibration and selection: a dataset split preprocessed for a model, and its task metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from modelfab.compress.runtimes import Predictor
from modelfab.core.errors import ConfigError, DataError
from modelfab.evaluate import compute_metrics
from modelfab.evaluate.model_eval import parse_data_split
from modelfab.store.store import Store

BATCH = 32


@dataclass
class SplitInputs:
    """A labelled split preprocessed for a model: batches of (B, 3, S, S) and (N,) class indices."""

    ref: str  # DATASET@version:split
    batches: list[Tensor]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def dataset_ref(store: Store, predictor: Predictor, data: str | None, default_split: str) -> tuple[str, str]:
    """(``DATASET@version``, split) from ``data`` or, when None, the dataset the model was trained on."""
    if data:
        return parse_data_split(data, default_split)
    if predictor.model.dataset_version_id is None:
        raise ConfigError(f"data: {predictor.model.name} records no training dataset; pass DATASET@version")
    dv = store.get_dataset_version(predictor.model.dataset_version_id)
    return f"{dv.dataset.name}@{dv.version}", default_split


def preprocess_batches(preprocess: Callable[[Sequence[Any]], Tensor], raw: Sequence[Any]) -> list[Tensor]:
    """Raw items -> preprocessed batches of at most :data:`BATCH` items."""
    return [preprocess(list(raw[i : i + BATCH])) for i in range(0, len(raw), BATCH)]


def labelled_split(
    store: Store,
    predictor: Predictor,
    data: str | None = None,
    *,
    split: str = "val",
    limit: int | None = None,
    ground_truth: bool = False,
) -> SplitInputs:
    """The labelled ``split`` of ``data`` (default: the model's training dataset), in the model's classes."""
    from modelfab.tune.data import item_inputs, load_task_data

    ref, split = dataset_ref(store, predictor, data, split)
    task = load_task_data(store, ref, predictor.labels, ground_truth=ground_truth)
    if task.classes != predictor.classes:
        raise DataError(
            f"{task.ref} task {task.view_name} has classes {task.classes}; the model has {predictor.classes}"
        )
    part = task.split(split)
    rows, y = part.rows[:limit], part.y.numpy()[:limit]
    raw = item_inputs(store, rows, task.modality)
    return SplitInputs(f"{task.ref}:{split}", preprocess_batches(predictor.preprocess, raw), y)


def calibration_batches(
    store: Store, predictor: Predictor, data: str | None, samples: int
) -> tuple[str, list[Tensor]]:
    """Up to ``samples`` preprocessed images of ``DATASET@v[:split]`` (labels not needed).

    Default: the model's training dataset, split ``calibration``, else ``train``. An explicit split
    that holds no items, or a model without a training dataset and no ``data``, raises DataError.
    """
    if samples < 1:
        raise ConfigError(f"samples: must be >= 1, got {samples}")
    explicit_split = data is not None and ":" in data
    if data is None and predictor.model.dataset_version_id is None:
        raise DataError(
            f"calibration: {predictor.model.name} records no training dataset; pass --calibration DATASET@version"
        )
    ref, split = dataset_ref(store, predictor, data, "calibration")
    dv = store.get_dataset_version(ref)
    rows = store.version_items(dv.id)
    chosen = [r for r in rows if r.split == split]
    if not chosen and not explicit_split:
        split = "train"
        chosen = [r for r in rows if r.split == split]
    if not chosen:
        raise DataError(
            f"calibration: {ref} has no items in split {split!r}; INT8 needs calibration images "
            "(pass --calibration DATASET@version:split)"
        )
    if dv.dataset.modality != "image":
        raise DataError(f"calibration: {ref} holds {dv.dataset.modality} items; INT8 calibration needs images")
    from modelfab.tune.data import item_inputs

    chosen = sorted(chosen, key=lambda r: r.content_hash)[:samples]  # a fixed, order-free choice
    raw = item_inputs(store, chosen, "image")
    return f"{ref}:{split}", preprocess_batches(predictor.preprocess, raw)


def metric_name(task: str) -> str:
    """The selection / parity metric of a task: AUROC for image-defect, accuracy otherwise."""
    return "auroc" if task == "image-defect" else "accuracy"


def split_metrics(predictor: Predictor, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy (with the model's decision rule) and, for binary tasks, AUROC of ``probs`` on ``y``."""
    m = compute_metrics(
        y, probs, predictor.classes, positive=predictor.positive, threshold=predictor.threshold
    )
    out = {"accuracy": float(m.accuracy), "items": float(len(y))}
    if m.auroc is not None:
        out["auroc"] = float(m.auroc)
    return out


def run_batches(predictor: Predictor, batches: list[Tensor]) -> np.ndarray:
    """(N, C) probabilities of preprocessed batches."""
    if not batches:
        raise DataError("no inputs to run")
    return np.concatenate([predictor.run(b) for b in batches])
