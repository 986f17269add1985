"""FSDP (FSDP2, ``torch.distributed.fsdp.fully_shard``): shard every block, then the root.

Parameters, gradients and AdamW moments are sharded over the ranks (DTensors on a 1-D device
mesh); gradients are reduce-scattered as means, so a step equals DDP's (and one process on the
concatenated batch). Checkpoints stay in the single-process format (safetensors + JSON): the full
state dicts are gathered to rank 0 (``get_model_state_dict`` / ``get_optimizer_state_dict`` with
``full_state_dict=True, cpu_offload=True``), the optimizer's parameter names turned back into the
integer ids of ``optimizer.state_dict()``; loading shards a full state dict back onto the ranks.
So an FSDP checkpoint loads into a plain model and vice versa. Runs on gloo (CPU) and NCCL (CUDA).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from modelfab.pretrain.distributed import DistInfo


def shard_fsdp(model: nn.Module, info: DistInfo, device: str) -> nn.Module:
    """``fully_shard`` each transformer block, then the root (embedding, head, MTP); returns the model."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (info.world_size,))
    blocks = getattr(model, "blocks", None)
    for block in blocks if blocks is not None else []:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def set_grad_sync(model: nn.Module, sync: bool) -> None:
    """Skip (False) or do (True) the gradient reduce-scatter of the next backward (accumulation)."""
    model.set_requires_gradient_sync(sync)  # type: ignore[operator]


def _options(cpu_offload: bool = False, strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload, strict=strict)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's id order (ids count over the groups, as state_dict() does)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def gather_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Collective: full model (and optimizer) state dicts on rank 0's CPU (empty on the other ranks).

    The optimizer dict has the layout of ``optimizer.state_dict()`` (integer ids)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    opts = _options(cpu_offload=True)
    weights = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=opts))
    if optimizer is None:
        return weights, None
    osd: dict[str, Any] = dict(get_optimizer_state_dict(model, optimizer, options=opts))
    if not osd:
        return weights, {}
    ids = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    state = {ids[name]: entry for name, entry in osd["state"].items()}
    groups = [{**g, "params": [ids[n] for n in g["params"]]} for g in osd["param_groups"]]
    return weights, {"state": state, "param_groups": groups}


def load_full_state(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    optim_state: dict[str, Any] | None = None,
) -> None:
    """Collective: shard full state dicts (every rank passes the same ones) onto an FSDP model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, cast(dict[str, Any], weights), options=_options())
    if optimizer is None or optim_state is None:
        return
    names = _param_names(model, optimizer)
    state = {names[int(i)]: entry for i, entry in optim_state["state"].items()}
    groups = [{**g, "params": [names[int(i)] for i in g["params"]]} for g in optim_state["param_groups"]]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=_options())
