"""Where tensors run: resolving ``auto``/``cpu``/``cuda``, moving batches, and running a module on a device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from modelfab.core.errors import DataError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when one is available, else the CPU; ``cuda`` without one fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"device: {name!r} requested but no CUDA device is available")
    return torch.device(name)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (a tensor, or dicts/lists/tuples of them) to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def placed(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Run the body with ``module`` on ``device``; afterwards it goes back where it was (even on error).

    The moves run outside inference mode even when the caller is inside it: parameters copied there
    would become inference tensors, which can never again require gradients.
    """
    home = module_device(module)
    if home == device:
        yield
        return
    with torch.inference_mode(False):
        module.to(device)
    try:
        yield
    finally:
        with torch.inference_mode(False):
            module.to(home)
