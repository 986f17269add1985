"""Tuning methods, a catalog: how each one prepares a backbone and what it saves.

Every method is a :class:`Method` with
- ``prepare(module, cfg)``: set ``requires_grad`` (and wrap layers, for LoRA) in place;
- ``delta(module, cfg)``: the tensors that differ from the parent (what the L2 artifact stores);
- ``apply(module, cfg, tensors)``: re-create the method's change on a fresh copy of the parent.
Methods wrap layers (as PEFT does) instead of redefining model classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from modelfab.core.catalog import Catalog
from modelfab.core.errors import ConfigError, DataError
from modelfab.tune.config import TuneConfig


@dataclass(frozen=True)
class Method:
    """One tuning method (see module docstring)."""

    name: str
    trains_backbone: bool
    prepare: Callable[[nn.Module, TuneConfig], None]
    delta: Callable[[nn.Module, TuneConfig], dict[str, Tensor]]
    apply: Callable[[nn.Module, TuneConfig, dict[str, Tensor]], None]


METHODS: Catalog[Method] = Catalog("tuner")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def backbone_param_count(module: nn.Module) -> int:
    """Parameters of the backbone itself, LoRA adapters excluded."""
    return sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n)


def trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- probe ------------------------------------------------------------------------------------------
def _probe_prepare(module: nn.Module, cfg: TuneConfig) -> None:
    _freeze(module)


METHODS.add(
    "probe",
    Method("probe", False, _probe_prepare, lambda m, c: {}, lambda m, c, t: _freeze(m)),
    summary="linear/MLP head on frozen, cached features",
)


# -- LoRA through PEFT --------------------------------------------------------------------------------
def output_embedding_name(module: nn.Module) -> str | None:
    """Name of a language model's output embedding (``lm_head``), if it has one."""
    getter = getattr(module, "get_output_embeddings", None)
    out = getter() if callable(getter) else None
    if out is None:
        return None
    return next((name for name, sub in module.named_modules() if sub is out), None)


def lora_targets(module: nn.Module, stored: Iterable[str] = ()) -> list[str]:
    """Names of the 1x1 convolutions (groups 1) and linear layers: where LoRA goes.

    A language model's output embedding is left out: an L2 reads hidden states, so its adapters would
    never train, and PEFT would store the whole (tied) embedding matrix beside them (113 MB for
    SmolLM2-135M). ``stored``: the keys of saved adapters; a layer they adapt is a target anyway, so
    adapters saved before this rule still load.
    """
    lm_head = output_embedding_name(module)
    kept = {k.split(".lora_")[0] for k in stored if ".lora_" in k}
    names = []
    for name, sub in module.named_modules():
        adaptable = isinstance(sub, nn.Linear) or (
            isinstance(sub, nn.Conv2d) and sub.kernel_size == (1, 1) and sub.groups == 1
        )
        if adaptable and (name != lm_head or name in kept):
            names.append(name)
    if not names:
        raise ConfigError("lora: the backbone has no linear layers or 1x1 convolutions to adapt")
    return names


def _lora_config(module: nn.Module, cfg: TuneConfig, stored: Iterable[str] = ()) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=lora_targets(module, stored))


def _lora_prepare(module: nn.Module, cfg: TuneConfig, stored: Iterable[str] = ()) -> None:
    from peft import inject_adapter_in_model

    _freeze(module)
    inject_adapter_in_model(_lora_config(module, cfg, stored), module)
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)


def _lora_delta(module: nn.Module, cfg: TuneConfig) -> dict[str, Tensor]:
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(module, save_embedding_layers=False)  # the adapters only
    return {k: v.detach().clone() for k, v in state.items()}


def _lora_apply(module: nn.Module, cfg: TuneConfig, tensors: dict[str, Tensor]) -> None:
    from peft import set_peft_model_state_dict

    _lora_prepare(module, cfg, tensors)
    result = set_peft_model_state_dict(module, tensors)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise DataError(f"stored LoRA adapters do not fit the parent: unexpected {unexpected[:3]}")
    _freeze(module)


METHODS.add(
    "lora",
    Method("lora", True, _lora_prepare, _lora_delta, _lora_apply),
    summary="PEFT LoRA on 1x1 convs and linear layers",
)


# -- partial: the last k blocks ---------------------------------------------------------------------
def _block_list(module: nn.Module) -> nn.ModuleList:
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ConfigError("partial: the backbone has no block list")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def partial_names(module: nn.Module, k: int) -> list[str]:
    """Parameter names of the last ``k`` blocks and of every parameter registered after them."""
    blocks = _block_list(module)
    if k > len(blocks):
        raise ConfigError(f"partial_blocks: {k} exceeds the backbone's {len(blocks)} blocks")
    first = {id(p) for p in blocks[len(blocks) - k].parameters()}
    names = [n for n, _ in module.named_parameters()]
    start = next(i for i, (_, p) in enumerate(module.named_parameters()) if id(p) in first)
    return names[start:]


def _partial_prepare(module: nn.Module, cfg: TuneConfig) -> None:
    chosen = set(partial_names(module, cfg.partial_blocks))
    for name, p in module.named_parameters():
        p.requires_grad_(name in chosen)


def _partial_delta(module: nn.Module, cfg: TuneConfig) -> dict[str, Tensor]:
    chosen = set(partial_names(module, cfg.partial_blocks))
    return {n: p.detach().clone() for n, p in module.named_parameters() if n in chosen}


def _load_subset(module: nn.Module, tensors: dict[str, Tensor]) -> None:
    params = dict(module.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise DataError(f"stored weights do not fit the parent: unknown {unknown[:3]}")
    for name, value in tensors.items():
        if params[name].shape != value.shape:
            raise DataError(
                f"stored weight {name} has shape {tuple(value.shape)}, expected {tuple(params[name].shape)}"
            )
        params[name].data.copy_(value)
    _freeze(module)


METHODS.add(
    "partial",
    Method("partial", True, _partial_prepare, _partial_delta, lambda m, c, t: _load_subset(m, t)),
    summary="train the last k blocks",
)


# -- full ---------------------------------------------------------------------------------------------
def _full_prepare(module: nn.Module, cfg: TuneConfig) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


METHODS.add(
    "full",
    Method(
        "full",
        True,
        _full_prepare,
        lambda m, c: {n: p.detach().clone() for n, p in m.named_parameters()},
        lambda m, c, t: _load_subset(m, t),
    ),
    summary="fine-tune every backbone parameter",
)
