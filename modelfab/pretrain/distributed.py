"""torchrun data parallelism and the expert-parallel (EP) group of the EP-group balancing loss.

Launch with ``torchrun --nproc_per_node N -m modelfab.pretrain --config FILE``; the backend is
NCCL on CUDA and gloo on CPU.  Every rank holds all experts (data parallel); the EP group only
defines over which ranks the per-expert counts of the ``ep_group`` loss are summed.  FSDP is not
wired in yet (see docs/pretrain.md).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modelfab.pretrain.model import Transformer


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def set_ep_group(model: Transformer, group: dist.ProcessGroup | None) -> None:
    """Count the ep_group loss's per-expert assignments over ``group`` (None = the local micro-batch)."""
    for moe in model.moe_layers():
        moe.ep_group = group


def default_ep_group(info: DistInfo) -> dist.ProcessGroup | None:
    """The whole world as one EP group (every rank hosts a share of the experts' tokens)."""
    return dist.group.WORLD if info.enabled else None


def wrap_ddp(model: nn.Module, info: DistInfo, device: str) -> nn.Module:
    """DDP wrapper; buffers are not broadcast (the aux-free biases are synced by all-reducing loads)."""
    if not info.enabled:
        return model
    ids = [info.local_rank] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def all_reduce_(t: torch.Tensor, info: DistInfo, mean: bool = False) -> torch.Tensor:
    """In-place sum (or mean) over ranks; a no-op on one process."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if mean:
            t /= info.world_size
    return t


def update_router_biases(model: Transformer, info: DistInfo) -> None:
    """Aux-loss-free step on every router, with loads summed over ranks so biases stay identical."""
    for moe in model.moe_layers():
        router = moe.router
        if router.kind == "aux_free":
            all_reduce_(router.load, info)
            router.update_bias()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """End a distributed run cleanly: wait for every rank, free unreachable wrappers, then destroy.

    Without the barrier a fast rank tore its gloo pairs down while another still used them, and a
    DDP reducer collected only at interpreter exit aborted its process (``terminate called without an
    active exception``, SIGABRT; seen once in CI).
    """
    if info.enabled and dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()
