"""Training checkpoints as safetensors + JSON (no pickle), written atomically, verified on resume.

``ckpt-000120.safetensors`` holds the trainable weights (``model.*``) and the optimizer's tensors
(``opt.<param index>.<name>``); ``ckpt-000120.json`` holds the step, the loss history, elapsed
time, the optimizer's hyper-parameters and the sha256 of the safetensors file.  The JSON is
written last, so a checkpoint without a valid JSON is ignored; a corrupt one is reported and the
previous checkpoint is used instead (it is never deleted before a newer one is complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from modelfab.core.errors import DataError


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    path: Path


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's state as flat tensors plus its JSON-able param groups."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = value if isinstance(value, Tensor) else torch.tensor(value)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, Tensor], meta: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` (weights then JSON), then prune all but the ``keep`` newest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = run_dir / f"ckpt-{step:06d}.safetensors"
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(weights, lambda tmp: save_file(payload, tmp))
    record = {**meta, "step": step, "weights": weights.name, "sha256": _sha256(weights)}
    _atomic_write(run_dir / f"ckpt-{step:06d}.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return weights


def list_checkpoints(run_dir: Path) -> list[Path]:
    """JSON files of the run's checkpoints, oldest first."""
    return sorted(run_dir.glob("ckpt-*.json"))


def _read(json_path: Path) -> Checkpoint:
    try:
        meta = json.loads(json_path.read_text())
        weights = json_path.with_name(meta["weights"])
        if _sha256(weights) != meta["sha256"]:
            raise ValueError("sha256 mismatch")
        tensors = load_file(str(weights))
    except (OSError, ValueError, KeyError, json.JSONDecodeError, Exception) as exc:
        raise DataError(f"checkpoint {json_path.name} is corrupt ({exc})") from None
    return Checkpoint(int(meta["step"]), tensors, meta, json_path)


def latest_checkpoint(run_dir: Path, warn: Any = None) -> Checkpoint | None:
    """The newest valid checkpoint; corrupt newer ones are reported through ``warn`` and skipped.

    Raises DataError when checkpoints exist but none is readable.
    """
    found = list_checkpoints(run_dir)
    errors: list[str] = []
    for json_path in reversed(found):
        try:
            return _read(json_path)
        except DataError as exc:
            errors.append(str(exc))
            if warn is not None:
                warn(f"{exc}; falling back to the previous checkpoint")
    if errors:
        raise DataError(f"no usable checkpoint in {run_dir}: {errors[0]}")
    return None
