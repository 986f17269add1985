"""Model selection: the best registered model of a task under a latency and size budget on a device.

Candidates are the registered models of the task (L2s and their exported / quantized children).
Each is ranked by its validation metric on ``DATASET@version`` (AUROC for image-defect, accuracy
otherwise; read from ``metrics["val@DATASET@version"]`` or computed once and cached there) under
the constraints, using stored latency profiles for (device, runtime, batch, threads) and profiling
missing ones on the fly (only possible for ``device="this"``). Every excluded model gets a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelfab.compress.data import SplitInputs, labelled_split, metric_name, run_batches, split_metrics
from modelfab.compress.parity import deployable
from modelfab.compress.profile import profile_model, stored_profiles
from modelfab.compress.runtimes import RUNTIMES, default_threads, load_predictor, model_format, native_runtime
from modelfab.core.errors import ConfigError, DataError, ModelfabError, NotFoundError
from modelfab.core.machine import device_label
from modelfab.store.models import list_models, update_metrics
from modelfab.store.schema import Model
from modelfab.store.store import Store

STATS = ("p50", "p95")


class BudgetError(ConfigError):
    """No candidate meets the latency / size budget (the message says what the fastest achieves)."""


@dataclass
class Candidate:
    """One model considered, with its numbers and why it was chosen or excluded."""

    model: Model
    runtime: str | None = None
    metric: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    status: str = "excluded"  # chosen | fits | excluded
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {"id": m.id, "name": m.name, "version": m.version, "runtime": self.runtime, "metric": self.metric,
                "latency_ms": self.latency_ms, "size_mb": self.size_mb, "status": self.status, "reason": self.reason,
                "format": (m.architecture or {}).get("format", "scenario"),
                "precision": (m.architecture or {}).get("precision", "fp32")}


@dataclass
class Selection:
    """The ranked candidates (fitting ones first, best first) and the chosen one, if any."""

    task: str
    data: str
    metric: str
    device: str
    batch: int
    threads: int
    stat: str
    max_latency_ms: float
    max_size_mb: float | None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.status == "chosen"), None)

    def nothing_fits(self) -> str:
        """One line: the budget and what the fastest measured candidate achieves."""
        timed = [c for c in self.candidates if c.latency_ms is not None]
        budget = f"{self.stat} <= {self.max_latency_ms:g} ms" + (
            f", size <= {self.max_size_mb:g} MB" if self.max_size_mb is not None else "")
        if not timed:
            return f"no {self.task} model meets {budget} at batch {self.batch}: none could be measured"
        fast = min(timed, key=lambda c: c.latency_ms or 0.0)
        return (f"no {self.task} model meets {budget} at batch {self.batch} on {self.device}; the fastest, "
                f"{fast.model.name}:{fast.model.version} ({fast.runtime}), takes {fast.latency_ms:.1f} ms "
                f"at {fast.size_mb:.1f} MB")

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {"task": self.task, "data": self.data, "metric": self.metric, "device": self.device,
                "batch": self.batch, "threads": self.threads, "stat": self.stat,
                "max_latency_ms": self.max_latency_ms, "max_size_mb": self.max_size_mb,
                "chosen": chosen.to_dict() if chosen else None,
                "candidates": [c.to_dict() for c in self.candidates]}


def _val_metric(store: Store, model: Model, data: str, name: str, cache: dict[Any, SplitInputs]) -> float:
    key = f"val@{data}"
    stored = (model.metrics or {}).get(key) or {}
    if name in stored:
        return float(stored[name])
    predictor = load_predictor(store, model)
    split_key = (predictor.labels, tuple(predictor.classes), predictor.input_spec)
    if split_key not in cache:
        cache[split_key] = labelled_split(store, predictor, data, split="val")
    val = cache[split_key]
    metrics = split_metrics(predictor, val.y, run_batches(predictor, val.batches))
    update_metrics(store, model.id, key, metrics)
    if name not in metrics:
        raise DataError(f"{name} is undefined on {val.ref} (a single class?)")
    return float(metrics[name])


def select_model(
    store: Store,
    *,
    task: str,
    data: str,
    max_latency_ms: float,
    max_size_mb: float | None = None,
    batch: int = 1,
    device: str = "this",
    runtime: str = "any",
    threads: int | None = None,
    stat: str = "p50",
    profile_missing: bool = True,
    repeats: int = 10,
) -> Selection:
    """Rank the models of ``task`` on ``data``'s validation split under the budget (see module docstring)."""
    if runtime != "any" and runtime not in RUNTIMES:
        raise ConfigError(f"runtime: unknown {runtime!r}; use any, {', '.join(RUNTIMES.names())}")
    if stat not in STATS:
        raise ConfigError(f"stat: use {' or '.join(STATS)}, got {stat!r}")
    if not max_latency_ms > 0 or (max_size_mb is not None and not max_size_mb > 0) or batch < 1:
        raise ConfigError("max_latency_ms and max_size_mb must be > 0 and batch >= 1")
    dv = store.get_dataset_version(data)
    data_ref = f"{dv.dataset.name}@{dv.version}"
    models = [m for m in list_models(store, "L2") if m.task == task]
    if not models:
        known = sorted({m.task for m in list_models(store, "L2")})
        raise NotFoundError(f"no registered L2 model of task {task!r}; tasks: {', '.join(known) or '(none)'}")
    this = device in ("this", device_label())
    dev = device_label() if this else device
    n_threads = threads or default_threads()
    sel = Selection(task, data_ref, metric_name(task), dev, batch, n_threads, stat, max_latency_ms, max_size_mb)
    cache: dict[Any, SplitInputs] = {}
    for model in models:
        sel.candidates.append(_consider(store, model, sel, runtime, this, profile_missing, repeats, cache))
    fits = sorted((c for c in sel.candidates if c.status == "fits"),
                  key=lambda c: (-(c.metric or 0.0), c.latency_ms or 0.0))
    if fits:
        fits[0].status = "chosen"
        fits[0].reason = f"best {sel.metric} within the budget"
    rest = [c for c in sel.candidates if c.status == "excluded"]
    sel.candidates = fits + sorted(rest, key=lambda c: -(c.metric or -1.0))
    return sel


def _consider(store: Store, model: Model, sel: Selection, runtime: str, this: bool, profile_missing: bool,
              repeats: int, cache: dict[Any, SplitInputs]) -> Candidate:
    cand = Candidate(model)
    try:
        fmt, _ = model_format(store, model)
    except ConfigError:
        cand.reason = "not runnable (no task head)"
        return cand
    cand.runtime = native_runtime(fmt)
    if runtime != "any" and cand.runtime != runtime:
        cand.reason = f"runs on {cand.runtime}, not {runtime}"
        return cand
    ok, why = deployable(store, model)
    if not ok:
        cand.reason = f"not deployable: {why}"
        return cand
    try:
        cand.metric = _val_metric(store, model, sel.data, sel.metric, cache)
    except ModelfabError as exc:
        cand.reason = f"no validation {sel.metric}: {str(exc).splitlines()[0]}"
        return cand
    rows = stored_profiles(store, model.id, device=sel.device, runtime=cand.runtime, batch=sel.batch,
                           threads=sel.threads)
    if not rows and this and profile_missing:
        try:
            rows = [r for r in profile_model(store, model, runtime=cand.runtime, batches=[sel.batch],
                                             threads=sel.threads, repeats=repeats) if r.batch == sel.batch]
        except ModelfabError as exc:
            cand.reason = f"could not be profiled: {str(exc).splitlines()[0]}"
            return cand
    if not rows:
        cand.reason = f"no latency profile on {sel.device} ({cand.runtime}, batch {sel.batch}, {sel.threads} threads)"
        return cand
    row = rows[0]
    cand.latency_ms = row.p50_ms if sel.stat == "p50" else row.p95_ms
    cand.size_mb = row.size_mb
    over = []
    if cand.latency_ms > sel.max_latency_ms:
        over.append(f"{sel.stat} {cand.latency_ms:.1f} ms > {sel.max_latency_ms:g} ms")
    if sel.max_size_mb is not None and cand.size_mb > sel.max_size_mb:
        over.append(f"size {cand.size_mb:.1f} MB > {sel.max_size_mb:g} MB")
    if over:
        cand.reason = "; ".join(over)
        return cand
    cand.status = "fits"
    cand.reason = "within the budget"
    return cand


PRUNE_LATENCY_EXPONENT = 1.36  # measured here: 50% channel pruning -> 0.39x ONNX Runtime latency (0.5 ** 1.36)


Plan = list[tuple[str, dict[str, Any]]]


def compression_plan(store: Store, source: Model, latency_ms: float, budget_ms: float, *,
                     size_mb: float | None = None, max_size_mb: float | None = None) -> Plan:
    """Compressors to try on ``source`` for ``budget_ms``, cheapest first (only those in the catalog).

    ONNX export (no training, ~3-4x on CPU) when the source has none; static INT8 when the gap is
    small; channel pruning at the ratio the measured latency curve predicts; elastic extraction
    searched directly for the budget; distillation needs a student base and is not tried blindly.
    """
    from modelfab.compress.extract import EXTRACTORS

    ratio = budget_ms / latency_ms
    # parameters (and so size) of channel pruning shrink about as (1 - p)^2; keep a 5-point margin
    size_ratio = max_size_mb / size_mb if size_mb and max_size_mb else None
    fmt, _ = model_format(store, source)
    plan: list[tuple[str, dict[str, Any]]] = []
    if fmt == "scenario":
        plan.append(("export", {"format": "onnx"}))
    if "quantize" in EXTRACTORS and ratio >= 0.5:
        plan.append(("quantize", {}))
    if "prune" in EXTRACTORS:
        prune = 1.0 - min(ratio, 1.0) ** (1.0 / PRUNE_LATENCY_EXPONENT)
        if size_ratio is not None and size_ratio < 1.0:
            prune = max(prune, 1.0 - size_ratio ** 0.5 + 0.05)
        plan.append(("prune", {"ratio": round(min(0.9, max(0.1, prune)), 2)}))
    if "elastic" in EXTRACTORS:
        plan.append(("elastic", {"max_latency_ms": budget_ms}))
    return plan


def select_or_extract(store: Store, **kwargs: Any) -> tuple[Selection, list[dict[str, Any]]]:
    """:func:`select_model`; when nothing fits, derive children of the best measured candidate, cheapest
    compressor first, re-selecting after each, until one fits. Returns (selection, attempts)."""
    from modelfab.compress.export import export_model
    from modelfab.compress.extract import extract

    sel = select_model(store, **kwargs)
    attempts: list[dict[str, Any]] = []
    if sel.chosen is not None:
        return sel, attempts
    timed = [c for c in sel.candidates if c.latency_ms is not None and c.metric is not None]
    if not timed:
        raise BudgetError(sel.nothing_fits())
    best = max(timed, key=lambda c: (c.metric or 0.0, -(c.latency_ms or 0.0)))  # the source worth compressing
    source = best.model
    fmt, _ = model_format(store, source)
    if fmt != "scenario" and source.parent_id:  # an exported child: compress the L2 it came from
        source = store.get_model(source.parent_id)
    plan = compression_plan(store, source, float(best.latency_ms or 1.0), sel.max_latency_ms,
                            size_mb=best.size_mb, max_size_mb=sel.max_size_mb)
    for method, options in plan:
        try:
            if method == "export":
                child = export_model(store, source.id, "onnx").model
            else:
                child = extract(store, source.id, method, options).model
        except ModelfabError as exc:
            attempts.append({"method": method, "options": options, "error": str(exc).splitlines()[0]})
            continue
        attempts.append({"method": method, "options": options, "model": child.id})
        sel = select_model(store, **kwargs)
        if sel.chosen is not None:
            return sel, attempts
    tried = ", ".join(a["method"] for a in attempts) or "nothing (no compressor applies)"
    raise BudgetError(f"{sel.nothing_fits()}; tried {tried}")
