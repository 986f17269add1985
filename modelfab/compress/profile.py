"""Latency profiles: warm-up then repeated timing per batch size, stored per (device, runtime, batch, threads).

Timing runs in a fresh subprocess (``python -m modelfab.compress.profile_worker``) so that peak
memory is that model's alone: ``peak_memory_mb`` is the process's peak RSS (``VmHWM``) minus its
RSS after imports, i.e. the loaded model plus the activations of the largest batch so far. Inputs
are seeded random tensors of the model's input shape (a dense CNN's time does not depend on values).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select

from modelfab.compress.runtimes import RUNTIMES, Predictor, default_threads, model_format, native_runtime
from modelfab.core.errors import ConfigError, ModelfabError
from modelfab.core.machine import device_label
from modelfab.store.schema import LatencyProfile, Model, utcnow
from modelfab.store.store import Store

MB = 1e6


@dataclass
class Timing:
    """One measured cell."""

    batch: int
    p50_ms: float
    p95_ms: float
    throughput: float  # items per second at the median latency
    peak_memory_mb: float
    size_mb: float
    repeats: int


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms) + 0.5) - 1))]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_mb() -> float:
    """Peak RSS of this process image: ``VmHWM`` (reset by exec, unlike ``getrusage``'s ``ru_maxrss``,
    which Linux carries over from the parent across ``execve``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # Linux: kilobytes


def time_predictor(predictor: Predictor, batches: Sequence[int], repeats: int, warmup: int,
                   baseline_mb: float = 0.0) -> list[Timing]:
    """Time ``predictor.run`` on seeded inputs of each batch size (after ``warmup`` untimed calls)."""
    size = predictor.input_spec.image_size or 224
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in batches:
        x = torch.randn(b, 3, size, size, generator=gen)  # (B, 3, S, S)
        for _ in range(warmup):
            predictor.run(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor.run(x)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p50 = statistics.median(times)
        out.append(Timing(b, p50, percentile(times, 0.95), b * 1000 / p50, max(0.0, _peak_mb() - baseline_mb),
                          predictor.size_bytes / MB, repeats))
    return out


def check_batches(batches: Sequence[int]) -> list[int]:
    """Sorted distinct batch sizes, each >= 1."""
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"batch: sizes must be >= 1, got {list(batches)}")
    return sorted(set(batches))


def measure(store: Store, model: Model, runtime: str, batches: Sequence[int], threads: int,
            repeats: int, warmup: int) -> list[Timing]:
    """Run the timing in a fresh subprocess (see module docstring)."""
    job = {"home": str(store.settings.home), "db": store.settings.db_url, "artifacts": store.settings.artifacts_url,
           "model": model.id, "runtime": runtime, "batches": list(batches), "threads": threads,
           "repeats": repeats, "warmup": warmup}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "modelfab.compress.profile_worker"], input=json.dumps(job),
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ModelfabError(f"profile of {model.name}:{model.version} failed: {last}")
    return [Timing(**row) for row in json.loads(proc.stdout.strip().splitlines()[-1])]


def profile_model(
    store: Store,
    ref: str | Model,
    *,
    runtime: str | None = None,
    batches: Sequence[int] = (1, 8, 32),
    threads: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> list[LatencyProfile]:
    """Measure ``ref`` under ``runtime`` (default: the one its format needs) and store the profiles."""
    model = store.get_model(ref) if isinstance(ref, str) else ref
    fmt, _ = model_format(store, model)
    rt = runtime or native_runtime(fmt)
    if fmt not in RUNTIMES.get(rt).formats:
        raise ConfigError(f"runtime: {rt} cannot run {model.name}:{model.version} (format {fmt}); "
                          f"export it first: modelfab export {model.name} --format onnx")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {repeats} / {warmup}")
    n_threads = threads or default_threads()
    timings = measure(store, model, rt, check_batches(batches), n_threads, repeats, warmup)
    return store_profiles(store, model, rt, n_threads, timings)


def store_profiles(store: Store, model: Model, runtime: str, threads: int, timings: list[Timing],
                   device: str | None = None) -> list[LatencyProfile]:
    """Insert or replace the profile rows of ``model`` (one transaction)."""
    dev = device or device_label()
    rows = []
    with store.transaction() as s:
        for t in timings:
            row = s.scalar(select(LatencyProfile).where(
                LatencyProfile.model_id == model.id, LatencyProfile.device == dev, LatencyProfile.runtime == runtime,
                LatencyProfile.batch == t.batch, LatencyProfile.threads == threads))
            if row is None:
                row = LatencyProfile(model_id=model.id, device=dev, runtime=runtime, batch=t.batch, threads=threads)
                s.add(row)
            row.p50_ms, row.p95_ms, row.throughput = t.p50_ms, t.p95_ms, t.throughput
            row.peak_memory_mb, row.size_mb, row.measured_at = t.peak_memory_mb, t.size_mb, utcnow()
            rows.append(row)
    return rows


def stored_profiles(store: Store, model_id: str, *, device: str | None = None, runtime: str | None = None,
                    batch: int | None = None, threads: int | None = None) -> list[LatencyProfile]:
    """Stored profiles of a model, filtered."""
    q = select(LatencyProfile).where(LatencyProfile.model_id == model_id)
    for col, value in ((LatencyProfile.device, device), (LatencyProfile.runtime, runtime),
                       (LatencyProfile.batch, batch), (LatencyProfile.threads, threads)):
        if value is not None:
            q = q.where(col == value)
    with store.session() as s:
        return list(s.scalars(q.order_by(LatencyProfile.runtime, LatencyProfile.batch)).all())


def profile_dict(row: LatencyProfile) -> dict[str, Any]:
    """A JSON-able profile row."""
    return {"model_id": row.model_id, "device": row.device, "runtime": row.runtime, "batch": row.batch,
            "threads": row.threads, "p50_ms": row.p50_ms, "p95_ms": row.p95_ms, "throughput": row.throughput,
            "peak_memory_mb": row.peak_memory_mb, "size_mb": row.size_mb,
            "measured_at": row.measured_at.isoformat() if row.measured_at else None}


__all__ = ["Timing", "measure", "profile_dict", "profile_model", "stored_profiles", "time_predictor"]
