"""Evaluate a registered L2 on a dataset split: run it, compute metrics, write the report, record it."""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.core.machine import device_label
from modelfab.evaluate.api import EvaluationResult, evaluate_predictions
from modelfab.evaluate.curves import choose_threshold_for_precision
from modelfab.store.models import get_model, update_metrics
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.schema import SPLITS
from modelfab.store.store import Store

PRECISION_TARGETS = (0.9,)


@dataclass
class ModelEvaluation:
    model_id: str
    data: str
    split: str
    result: EvaluationResult
    latency: dict[str, Any]
    report_dir: Path


def parse_data_split(ref: str, default: str = "test") -> tuple[str, str]:
    """``elpv@2:test`` -> (``elpv@2``, ``test``)."""
    data, _, split = ref.partition(":")
    split = split or default
    if split not in SPLITS:
        raise ConfigError(f"data: unknown split {split!r} in {ref!r}; use {', '.join(SPLITS)}")
    return data, split


def measure_latency(predict: Any, inputs: list[Any], repeats: int = 10) -> dict[str, Any]:
    """Batch-1 latency over up to ``repeats`` inputs after two warm-up calls."""
    sample = inputs[: max(1, min(repeats, len(inputs)))]
    for x in sample[:2]:
        predict([x])
    times = []
    for x in sample:
        t0 = time.perf_counter()
        predict([x])
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "device": device_label(),
        "runtime": "torch",
        "batch": 1,
        "threads": torch.get_num_threads(),
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
    }


def evaluate_model(
    store: Store,
    ref: str,
    data_ref: str,
    *,
    out_dir: Path | None = None,
    compare: list[str] | None = None,
    ground_truth: bool = False,
) -> ModelEvaluation:
    """Evaluate L2 ``ref`` on ``DATASET@version[:split]`` (default split: test).

    The operating threshold is the one stored with the model (chosen on validation); the
    recall-at-precision thresholds are chosen on the validation split here. Test metrics are
    written into the model's metrics under ``<split>``; the report compares with the previous
    version of the same name and any ``compare`` models evaluated on the same data.
    """
    from modelfab.tune.data import item_inputs, load_task_data
    from modelfab.tune.load import load_scenario

    data, split = parse_data_split(data_ref)
    scenario = load_scenario(store, ref)
    model = scenario.model
    task = load_task_data(store, data, scenario.config.labels, ground_truth=ground_truth)
    if task.classes != scenario.classes:
        raise DataError(
            f"{task.ref} task {task.view_name} has classes {task.classes}; the model has {scenario.classes}"
        )
    target = task.split(split)
    with tracked_run(store, "evaluate", config={"model": model.id, "data": task.ref, "split": split}) as run:
        probs = scenario.predict_rows(store, target.rows, task.modality).numpy()
        precision_thresholds: dict[float, float] = {}
        if scenario.positive is not None and split != "val" and len(task.splits["val"]):
            val = task.splits["val"]
            pv = scenario.predict_rows(store, val.rows, task.modality).numpy()
            y_val = (val.y.numpy() == scenario.positive).astype(int)
            for p in PRECISION_TARGETS:
                precision_thresholds[p] = choose_threshold_for_precision(
                    y_val, pv[:, scenario.positive], p, strict=False
                )
        latency = measure_latency(scenario.predict_proba, item_inputs(store, target.rows[:12], task.modality))
        others: dict[str, Any] = {}
        for other in _comparisons(store, model, compare or []):
            stored = (other.metrics or {}).get(f"{split}@{task.ref}")
            if stored:
                others[f"{other.name}:{other.version}"] = stored
        report_dir = out_dir or store.settings.home / "reports" / model.id / f"{task.ref.replace('@', '-v')}-{split}"
        card = {
            "model": f"{model.name}:{model.version}",
            "id": model.id,
            "tier": model.tier,
            "task": model.task,
            "parent": model.parent_id,
            "method": scenario.config.method,
            "data": f"{task.ref}:{split}",
            "threshold": scenario.threshold,
            "items": len(target),
        }
        result = evaluate_predictions(
            target.y.numpy(),
            probs,
            scenario.classes,
            positive=scenario.positive,
            threshold=scenario.threshold,
            precision_thresholds=precision_thresholds or None,
            out_dir=report_dir,
            card=card,
            latency=latency,
            compare_with=others or None,
            name=f"{model.name}:{model.version}",
            title=f"{model.name}:{model.version}",
        )
        summary = {k: v for k, v in result.metrics.summary().items() if v is not None}
        update_metrics(
            store,
            model.id,
            f"{split}@{task.ref}",
            {**summary, "roc": result.metrics.to_dict()["roc"], "positive": result.metrics.positive},
        )
        update_metrics(store, model.id, split, summary)
    finish_run(store, run.id, outputs={"report": str(report_dir / "report.html")}, metrics=summary)
    return ModelEvaluation(model.id, task.ref, split, result, latency, report_dir)


def _comparisons(store: Store, model: Any, refs: list[str]) -> list[Any]:
    out = []
    if model.version > 1:
        with contextlib.suppress(NotFoundError):  # earlier versions may have been registered elsewhere
            out.append(get_model(store, f"{model.name}:{model.version - 1}"))
    out.extend(get_model(store, r) for r in refs)
    return out


__all__ = ["ModelEvaluation", "evaluate_model", "measure_latency", "parse_data_split"]
