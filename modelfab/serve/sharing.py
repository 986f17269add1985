"""One copy of a base backbone serving many LoRA / probe L2s (PEFT multi-adapter, switched under a lock).

Every LoRA L2 of the base becomes a named PEFT adapter injected into the same module; a probe L2
runs the base with no adapter active. Before a batch the group's lock is taken and the model's
adapter is activated (``set_adapter`` on every LoRA layer, skipped when it is already active), so
the extra memory per L2 is its adapter matrices and its head only.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modelfab.core.errors import DataError
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.tune.config import TuneConfig
from modelfab.tune.heads import TaskHead
from modelfab.zoo.base import Backbone
from modelfab.zoo.registry import load_registered

SHAREABLE_METHODS = ("lora", "probe")


def load_head(info: dict[str, Any], tensors: dict[str, Tensor], ref: str) -> TaskHead:
    """The task head stored in an L2's tensors (``head.*``)."""
    head = TaskHead(int(info["head"]["dim"]), len(info["classes"]), info["head"]["kind"], int(info["head"]["hidden"]))
    try:
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    except RuntimeError as exc:
        raise DataError(f"stored head of {ref!r} does not fit: {str(exc).splitlines()[0]}") from None
    return head.eval()


class SharedBase:
    """A base backbone loaded once, with one adapter per LoRA L2."""

    def __init__(self, store: Store, base_id: str, image_size: int | None) -> None:
        backbone, self.base_model = load_registered(store, base_id)
        if image_size is not None and image_size != backbone.input_spec.image_size:
            backbone.input_spec = dataclasses.replace(backbone.input_spec, image_size=image_size)
        self.backbone: Backbone = backbone
        self.module: nn.Module = backbone.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.lock = threading.Lock()
        self._targets: list[str] | None = None
        self._lm_head: str | None = None
        self._active: str | None = None
        self.adapters: list[str] = []
        self._layer_cache: list[Any] | None = None

    def _layers(self) -> list[Any]:
        if self._layer_cache is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layer_cache = [m for m in self.module.modules() if isinstance(m, BaseTunerLayer)]
        return self._layer_cache

    def add(self, store: Store, model: Model, info: dict[str, Any]) -> tuple[Callable[[Any], np.ndarray], int]:
        """Attach L2 ``model`` (its card's ``scenario`` section ``info``).

        Returns its batch runner and the bytes it adds (its adapter matrices and head).
        """
        if not model.weights_digest:
            raise DataError(f"model {model.name}:{model.version} has no weights")
        tensors = store.artifacts.get_tensors(model.weights_digest)
        head = load_head(info, tensors, model.id)
        adapter: str | None = None
        delta: dict[str, Tensor] = {}
        if info["method"] == "lora":
            from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

            from modelfab.tune.methods import lora_targets, output_embedding_name

            cfg = TuneConfig.model_validate(info["config"])
            delta = {k[6:]: v for k, v in tensors.items() if k.startswith("delta.")}
            if self._targets is None:  # on the clean module, before any injection
                self._targets = lora_targets(self.module)
                self._lm_head = output_embedding_name(self.module)
            targets = list(self._targets)
            if self._lm_head and any(k.startswith(f"{self._lm_head}.lora_") for k in delta):
                targets.append(self._lm_head)  # adapters saved when the output embedding was a target
            adapter = "a_" + model.id.replace("-", "_")
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")  # that is the point here
                inject_adapter_in_model(lora, self.module, adapter_name=adapter)
            result = set_peft_model_state_dict(self.module, delta, adapter_name=adapter)
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise DataError(f"LoRA adapters of {model.id} do not fit the shared base: unexpected {unexpected[:3]}")
            for p in self.module.parameters():
                p.requires_grad_(False)
            self.adapters.append(adapter)
            self._layer_cache = None
            self._active = "?"  # injection changes the active adapter: force a switch on the next batch

        own = sum(t.numel() * t.element_size() for t in [*head.state_dict().values(), *delta.values()])

        def run(batch: Any) -> np.ndarray:  # preprocessed batch -> (N, C) probabilities
            with self.lock:
                self._activate(adapter)
                with torch.inference_mode():
                    return torch.softmax(head(self.backbone.embed(batch)), dim=1).float().numpy()

        return run, own

    def _activate(self, adapter: str | None) -> None:
        if self._active == adapter:
            return
        for layer in self._layers():
            layer.set_adapter(adapter if adapter is not None else [])
        self._active = adapter
