"""Parity records of derived models, and :func:`deployable`.

Two kinds, stored in the child model's ``metrics["parity"]``:

- ``export`` (fp32 ONNX / TorchScript): on validation inputs, the largest absolute probability
  difference between torch and the exported runtime is at most ``tolerance`` (1e-4) and every
  top-1 class agrees;
- ``task`` (INT8 and, later, other lossy extractions): the decided labels agree with the fp32
  reference on at least ``min_agreement`` (99%) of validation items and the task metric (AUROC for
  image-defect, accuracy otherwise) is within ``max_metric_drop`` (0.5 point = 0.005).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfab.core.errors import ModelfabError
from modelfab.store.schema import Model
from modelfab.store.store import Store

EXPORT_TOLERANCE = 1e-4
MIN_AGREEMENT = 0.99
MAX_METRIC_DROP = 0.005


class ParityFailed(ModelfabError):
    """A derived model was registered but its parity failed (CLI exit code 1: not deployable)."""

    exit_code = 1


def export_parity(reference: np.ndarray, exported: np.ndarray, tolerance: float, data: str) -> dict[str, Any]:
    """Compare (N, C) fp32 probabilities of torch (``reference``) and the exported runtime."""
    diff = float(np.abs(reference.astype(np.float64) - exported.astype(np.float64)).max())
    agree = float((reference.argmax(1) == exported.argmax(1)).mean())
    reasons = []
    if not diff <= tolerance:  # also catches NaN
        reasons.append(f"max |Δp| {diff:.3g} > tolerance {tolerance:.3g}")
    if agree < 1.0:
        reasons.append(f"top-1 agreement {agree:.4f} < 1")
    return {
        "kind": "export",
        "status": "failed" if reasons else "passed",
        "reason": "; ".join(reasons) if reasons else f"max |Δp| {diff:.3g} <= {tolerance:.3g}, top-1 agreement 1.0",
        "max_abs_diff": diff,
        "top1_agreement": agree,
        "tolerance": tolerance,
        "items": len(reference),
        "data": data,
    }


def task_parity(
    reference_labels: np.ndarray,
    labels: np.ndarray,
    metric: str,
    reference_metric: float,
    value: float,
    data: str,
    *,
    min_agreement: float = MIN_AGREEMENT,
    max_drop: float = MAX_METRIC_DROP,
) -> dict[str, Any]:
    """Compare decided labels and the task metric of a lossy model with its fp32 reference."""
    agree = float((reference_labels == labels).mean())
    drop = reference_metric - value
    reasons = []
    if agree < min_agreement:
        reasons.append(f"label agreement {agree:.4f} < {min_agreement}")
    if not abs(drop) <= max_drop + 1e-12:  # 0.900 - 0.895 is 0.005000000000000004 in floats
        reasons.append(f"{metric} {value:.4f} vs fp32 {reference_metric:.4f} (Δ {-drop:+.4f}, limit ±{max_drop})")
    ok_text = f"label agreement {agree:.4f}, {metric} {value:.4f} vs fp32 {reference_metric:.4f}"
    return {
        "kind": "task",
        "status": "failed" if reasons else "passed",
        "reason": "; ".join(reasons) if reasons else ok_text,
        "label_agreement": agree,
        "metric": metric,
        "value": value,
        "reference_value": reference_metric,
        "min_agreement": min_agreement,
        "max_metric_drop": max_drop,
        "items": len(labels),
        "data": data,
    }


def deployable(store: Store, model: Model | str) -> tuple[bool, str]:
    """Whether a model may be deployed, and why (not).

    Tuned L2 scenario models run as trained; derived models (exported, quantized) need a passed
    parity record. Foundation / industry backbones have no task head and are not deployable.
    """
    from modelfab.compress.runtimes import model_format
    from modelfab.core.errors import ConfigError

    m = store.get_model(model) if isinstance(model, str) else model
    try:
        fmt, _ = model_format(store, m)
    except ConfigError as exc:
        return False, str(exc)
    parity = (m.metrics or {}).get("parity")
    if fmt == "scenario":  # a tuned L2; a distilled one carries its compression record
        if parity and parity.get("status") != "passed":
            return False, f"{m.name}:{m.version} failed {parity.get('kind')} parity: {parity.get('reason')}"
        return True, f"{m.name}:{m.version} is a tuned L2 scenario model (torch runtime)"
    if not parity:
        return False, f"{m.name}:{m.version} ({fmt}) has no parity record"
    if parity.get("status") != "passed":
        return False, f"{m.name}:{m.version} failed {parity.get('kind')} parity: {parity.get('reason')}"
    return True, f"{parity.get('kind')} parity passed: {parity.get('reason')}"


def compression_record(metric: str, value: float, teacher_value: float, data: str, *, max_drop: float,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parity record of a compressed model (distilled, pruned, extracted): a new network, so no label
    agreement is asked; it passes when its validation metric is within ``max_drop`` of its teacher's."""
    drop = teacher_value - value
    ok = drop <= max_drop + 1e-12
    text = f"{metric} {value:.4f} vs teacher {teacher_value:.4f} (Δ {-drop:+.4f}, limit -{max_drop})"
    return {
        "kind": "compression",
        "status": "passed" if ok else "failed",
        "reason": text,
        "metric": metric,
        "value": value,
        "reference_value": teacher_value,
        "max_metric_drop": max_drop,
        "data": data,
        **(extra or {}),
    }
