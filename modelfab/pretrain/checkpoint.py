"""Checkpoints without pickles: safetensors for model and optimizer tensors, JSON for the rest.

Layout: ``<dir>/step_00000100/{model.safetensors, optim.safetensors, state.json}``.  A checkpoint is
written under a temporary name, fsynced and renamed, then ``latest.json`` is replaced atomically;
a run killed at any instant leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modelfab.core.errors import DataError


def optimizer_to_flat(
    optimizer: torch.optim.Optimizer | dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer (or its state dict) into tensors (``state.<param>.<key>``) and JSON-able rest."""
    sd = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]
) -> None:
    optimizer.load_state_dict(optimizer_state_from_flat(tensors, rest))


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_to_flat`: a ``optimizer.state_dict()``-layout dict."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in rest["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    # JSON turns tuples (AdamW's betas) into lists; give them back their type
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module | dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest.json`` at it and keep the newest ``keep``.

    ``model`` / ``optimizer`` may be given as (full) state dicts, e.g. gathered from FSDP shards."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    tmp = folder / f".tmp-step_{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    sd = model if isinstance(model, dict) else model.state_dict()
    weights = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    save_file(weights, str(tmp / "model.safetensors"))
    opt_tensors, opt_rest = optimizer_to_flat(optimizer)
    opt_tensors["rng.torch"] = torch.get_rng_state()
    save_file(opt_tensors, str(tmp / "optim.safetensors"))
    _write_json(tmp / "state.json", {**state, "step": step, "optimizer": opt_rest})
    for name in ("model.safetensors", "optim.safetensors"):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(folder)
    _write_json(folder / "latest.json", {"step": step, "path": final.name})
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest.json`` points at (None when there is none)."""
    pointer = folder / "latest.json"
    if not pointer.exists():
        return None
    path = folder / json.loads(pointer.read_text())["path"]
    if not (path / "state.json").exists():
        raise DataError(f"checkpoint {path} named by latest.json is incomplete")
    return path


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    device: str = "cpu",
    sharded: bool = False,
) -> dict[str, Any]:
    """Restore weights (and optimizer + RNG) from ``path``; returns the JSON state.

    ``sharded``: ``model`` is FSDP-sharded; every rank calls this and gets its shards."""
    state: dict[str, Any] = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "model.safetensors"), device="cpu" if sharded else device)
    optim_state = None
    if optimizer is not None:
        tensors = load_file(str(path / "optim.safetensors"), device="cpu")
        torch.set_rng_state(tensors.pop("rng.torch"))
        if not sharded:
            tensors = {k: v.to(device) if not k.endswith(".step") else v for k, v in tensors.items()}
        optim_state = optimizer_state_from_flat(tensors, state["optimizer"])
    if sharded:
        from modelfab.pretrain.fsdp import load_full_state

        load_full_state(model, weights, optimizer, optim_state)
    else:
        model.load_state_dict(weights, strict=True)
        if optimizer is not None and optim_state is not None:
            optimizer.load_state_dict(optim_state)
    return state
