"""Extractors, a catalog: derive a smaller/faster child from a registered model (``modelfab extract``).

Every extractor takes the store, the source model and its config, registers a child model with a
parity record and returns an :class:`ExtractResult`. ``quantize`` (static INT8) is the first entry;
distillation, pruning and elastic extraction plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from modelfab.compress.data import calibration_batches, labelled_split, metric_name, split_metrics
from modelfab.compress.graph import export_onnx
from modelfab.compress.parity import MAX_METRIC_DROP, MIN_AGREEMENT, task_parity
from modelfab.compress.quantize import quantize_int8
from modelfab.compress.runtimes import Predictor, load_predictor, model_format, onnx_runner, scenario_predictor
from modelfab.core.catalog import Catalog
from modelfab.core.errors import ConfigError
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.schema import Model
from modelfab.store.store import Store


@dataclass
class ExtractResult:
    """The registered child and its parity record."""

    model: Model
    parity: dict[str, Any]
    artifact_bytes: int
    details: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.parity["status"] == "passed"


Extractor = Callable[[Store, Model, Any], ExtractResult]
EXTRACTORS: Catalog[Extractor] = Catalog("extractor")


class QuantizeConfig(BaseModel):
    """Options of static INT8 quantization."""

    model_config = ConfigDict(extra="forbid")

    calibration: str | None = None
    """DATASET@version[:split] of calibration images (default: the model's dataset, split calibration, else train)."""
    samples: int = 64
    """Calibration images (activation ranges, MinMax)."""
    per_channel: bool = True
    """Per-channel weight scales (per-tensor INT8 was measured broken on EfficientNet-Lite)."""
    activations: Literal["uint8", "int8"] = "uint8"
    """Activation type: uint8 runs onnxruntime's fast U8S8 kernels on x86 (int8 left convs unfused, slower)."""
    data: str | None = None
    """DATASET@version[:split] for the task-level parity (default: the model's dataset, split val)."""
    name: str | None = None
    """Name of the child (default: <model>-int8)."""
    min_agreement: float = MIN_AGREEMENT
    """Smallest label agreement with fp32 for parity to pass."""
    max_metric_drop: float = MAX_METRIC_DROP
    """Largest |task metric - fp32 task metric| (0.005 = 0.5 point)."""


def fp32_source(store: Store, model: Model) -> tuple[Predictor, bytes]:
    """The fp32 predictor of ``model`` and its fp32 ONNX graph (exported from an L2 on the fly)."""
    fmt, card = model_format(store, model)
    if fmt == "scenario":
        source, net = scenario_predictor(store, model)
        size = source.input_spec.image_size or 224
        import torch

        return source, export_onnx(net, torch.zeros(2, 3, size, size))
    if fmt == "onnx" and card["exported"].get("precision") == "fp32":
        source = load_predictor(store, model)
        return source, store.artifacts.get_bytes(str(model.weights_digest))
    raise ConfigError(
        f"quantize: {model.name}:{model.version} is a {card.get('exported', {}).get('precision', '')} {fmt} model; "
        "quantize an L2 or its fp32 ONNX export"
    )


@EXTRACTORS.register(
    "quantize", config=QuantizeConfig, summary="static INT8 (onnxruntime QDQ, per-channel, uint8 activations)"
)
def extract_quantize(store: Store, model: Model, cfg: QuantizeConfig) -> ExtractResult:
    """Static INT8 child of ``model`` with a task-level parity record against fp32."""
    from modelfab.compress.export import register_child

    source, fp32 = fp32_source(store, model)
    cal_ref, cal = calibration_batches(store, source, cfg.calibration, cfg.samples)
    val = labelled_split(store, source, cfg.data, split="val")
    int8 = quantize_int8(fp32, cal, per_channel=cfg.per_channel, activations=cfg.activations)
    run32, run8 = onnx_runner(fp32, source.threads), onnx_runner(int8, source.threads)
    p32 = np.concatenate([run32(b) for b in val.batches])
    p8 = np.concatenate([run8(b) for b in val.batches])
    m32, m8 = split_metrics(source, val.y, p32), split_metrics(source, val.y, p8)
    metric = metric_name(source.task) if metric_name(source.task) in m32 else "accuracy"
    parity = task_parity(
        source.decide(p32), source.decide(p8), metric, m32[metric], m8[metric], val.ref,
        min_agreement=cfg.min_agreement, max_drop=cfg.max_metric_drop,
    )
    calibrated = sum(len(b) for b in cal)
    dataset = val.ref.rsplit(":", 1)[0]
    child = register_child(
        store, source, int8, name=cfg.name or f"{model.name}-int8", fmt="onnx", precision="int8",
        metrics={"parity": parity, "val": m8, f"val@{dataset}": m8, "fp32_val": m32},
        config={"extract": {"method": "quantize", **cfg.model_dump(), "calibration": cal_ref}},
        card_extra={"calibration": {"data": cal_ref, "samples": calibrated, "method": "minmax"},
                    "quantization": {"format": "QDQ", "weights": "int8", "activations": cfg.activations,
                                     "per_channel": cfg.per_channel}},
    )
    details = {"calibration": cal_ref, "samples": calibrated, "fp32_bytes": len(fp32), "int8_bytes": len(int8)}
    return ExtractResult(child, parity, len(int8), details)


def extract(store: Store, ref: str, method: str, options: dict[str, Any] | None = None) -> ExtractResult:
    """Run extractor ``method`` on model ``ref``; ``options`` are validated by the method's config model."""
    entry = EXTRACTORS.entry(method)
    config = entry.config
    cfg: Any = options
    if isinstance(config, type) and issubclass(config, BaseModel):
        cfg = config.model_validate(options or {})
    model = store.get_model(ref)
    with tracked_run(store, "extract", config={"method": method, **(options or {})}, inputs={"model": model.id}) as run:
        result = entry.builder(store, model, cfg)
        finish_run(store, run.id, outputs={"model": result.model.id}, metrics={"parity": result.parity})
    return result
