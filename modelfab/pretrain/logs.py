"""Training logs: one JSON object per line, the loss-spike counter and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Dense bf16 tensor-core peaks (TFLOP/s) used for MFU when the config gives none.
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def gpu_peak_tflops(device_name: str) -> float | None:
    name = device_name.upper()
    return next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)


class SpikeCounter:
    """A spike is a step whose loss exceeds ``factor`` x the EMA of the previous losses (after warm-up)."""

    def __init__(self, factor: float, beta: float = 0.9, warmup: int = 10) -> None:
        self.factor, self.beta, self.warmup = factor, beta, warmup
        self.ema: float | None = None
        self.seen = 0
        self.spikes = 0

    def update(self, loss: float) -> bool:
        spike = (
            self.ema is not None
            and self.seen >= self.warmup
            and (not math.isfinite(loss) or loss > self.factor * self.ema)
        )
        self.spikes += spike
        if math.isfinite(loss):
            self.ema = loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * loss
        self.seen += 1
        return bool(spike)

    def state(self) -> dict[str, Any]:
        return {"ema": self.ema, "seen": self.seen, "spikes": self.spikes}

    def load(self, state: dict[str, Any]) -> None:
        self.ema, self.seen, self.spikes = state["ema"], state["seen"], state["spikes"]


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a log; for steps logged twice (a killed run and its resume) the last one wins."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def plot_log(path: Path, out_dir: Path) -> list[Path]:
    """loss.png, grad_norm.png and (for MoE) expert_load.png from a JSONL log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_jsonl(path)
    written = []
    series = [("loss", "loss.png"), ("grad_norm", "grad_norm.png"), ("max_mean_load", "expert_load.png")]
    for key, name in series:
        pts = [(r["step"], float(r[key])) for r in recs if r.get(key) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        if key == "grad_norm":
            ax.set_yscale("log")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written
