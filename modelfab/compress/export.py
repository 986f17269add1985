"""``export``: an L2 -> an ONNX / TorchScript child model with an fp32 export-parity record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from modelfab.compress.data import labelled_split, run_batches, split_metrics
from modelfab.compress.graph import EXPORTERS, INPUT_NAME, OPSET, OUTPUT_NAME
from modelfab.compress.parity import EXPORT_TOLERANCE, export_parity
from modelfab.compress.runtimes import (
    Predictor,
    model_format,
    native_runtime,
    onnx_runner,
    scenario_predictor,
    torchscript_runner,
)
from modelfab.core.errors import ConfigError
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.schema import Model
from modelfab.store.store import Store

RUNNERS: dict[str, Callable[[bytes, int], Callable[[Tensor], np.ndarray]]] = {
    "onnx": onnx_runner,
    "torchscript": torchscript_runner,
}


@dataclass
class ExportResult:
    """The registered child, its parity record and artifact size."""

    model: Model
    parity: dict[str, Any]
    artifact_bytes: int

    @property
    def passed(self) -> bool:
        return self.parity["status"] == "passed"


def exported_card(source: Predictor, fmt: str, precision: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``exported`` card section every exported/derived child carries (what its runtime needs)."""
    return {
        "format": fmt,
        "runtime": native_runtime(fmt),
        "precision": precision,
        "source": source.model.id,
        "task": source.task,
        "labels": source.labels,
        "classes": source.classes,
        "positive": source.positive,
        "threshold": source.threshold,
        "modality": source.input_spec.modality,
        "input_spec": source.input_spec.to_dict(),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        **(extra or {}),
    }


def register_child(
    store: Store,
    source: Predictor,
    data: bytes,
    *,
    name: str,
    fmt: str,
    precision: str,
    metrics: dict[str, Any],
    config: dict[str, Any],
    card_extra: dict[str, Any] | None = None,
    params: int | None = None,
) -> Model:
    """Store the artifact bytes (content-addressed) and register the child of ``source`` (tier L2)."""
    digest = store.artifacts.put_bytes(data)
    parent = source.model
    card = exported_card(source, fmt, precision, card_extra)
    return store.register_model(
        name=name,
        tier="L2",
        task=parent.task,
        parent=parent.id,
        dataset_version=parent.dataset_version_id,
        arch={**{k: v for k, v in (parent.architecture or {}).items() if k != "format"}, "format": fmt,
              "runtime": card["runtime"], "precision": precision},
        config=config,
        metrics=metrics,
        params=parent.params if params is None else params,
        trainable_params=0,
        weights=digest,
        card={"exported": card, "artifact_bytes": len(data)},
    )


def export_model(
    store: Store,
    ref: str,
    fmt: str = "onnx",
    *,
    data: str | None = None,
    tolerance: float = EXPORT_TOLERANCE,
    name: str | None = None,
) -> ExportResult:
    """Export L2 ``ref`` to ``fmt`` and register it as a child with its export-parity record.

    Parity compares fp32 probabilities of torch and the exported runtime on the validation split of
    ``data`` (default: the dataset the L2 was trained on). A failed parity is recorded, not raised:
    the child is registered with ``status: failed`` and :func:`~modelfab.compress.parity.deployable`
    refuses it.
    """
    if fmt not in EXPORTERS:
        raise ConfigError(f"format: unknown {fmt!r}; use {', '.join(sorted(EXPORTERS))}")
    if not tolerance >= 0:
        raise ConfigError(f"tolerance: must be >= 0, got {tolerance}")
    model = store.get_model(ref)
    src_fmt, _ = model_format(store, model)
    if src_fmt != "scenario":
        raise ConfigError(
            f"export: {model.name}:{model.version} is already an exported {src_fmt} model; export its parent"
        )
    settings = {"format": fmt, "tolerance": tolerance}
    with tracked_run(store, "export", config=settings, inputs={"model": model.id}) as run:
        source, net = scenario_predictor(store, model)
        val = labelled_split(store, source, data, split="val")
        blob = EXPORTERS[fmt](net, val.batches[0][:2])
        exported = RUNNERS[fmt](blob, source.threads)
        reference = run_batches(source, val.batches)
        probs = np.concatenate([exported(b) for b in val.batches])
        parity = export_parity(reference, probs, tolerance, val.ref)
        metrics = split_metrics(source, val.y, probs)
        dataset = val.ref.rsplit(":", 1)[0]
        child = register_child(
            store,
            source,
            blob,
            name=name or f"{model.name}-{fmt}",
            fmt=fmt,
            precision="fp32",
            metrics={"parity": parity, "val": metrics, f"val@{dataset}": metrics},
            config={"export": {"format": fmt, "opset": OPSET if fmt == "onnx" else None, "tolerance": tolerance,
                               "data": val.ref, "run": run.id}},
        )
        finish_run(store, run.id, outputs={"model": child.id}, metrics={"parity": parity})
    return ExportResult(child, parity, len(blob))
