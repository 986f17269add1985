"""Load a registered L2: its parent backbone, the method's stored delta and the task head."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from modelfab.core.errors import ConfigError, DataError
from modelfab.store.datasets import ItemRow
from modelfab.store.models import model_card
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.tune.config import TuneConfig
from modelfab.tune.heads import TaskHead
from modelfab.tune.methods import METHODS
from modelfab.tune.prior import AnomalyPrior
from modelfab.tune.scenario import ScenarioNet
from modelfab.zoo.base import Backbone, InputSpec
from modelfab.zoo.registry import load_registered


@dataclass
class ScenarioModel:
    """A ready-to-predict L2."""

    model: Model
    backbone: Backbone
    net: ScenarioNet
    classes: list[str]
    positive: int | None
    threshold: float | None
    task: str
    config: TuneConfig
    base_model: Model

    def predict_rows(self, store: Store, rows: list[ItemRow], modality: str) -> Tensor:
        """(N, C) probabilities of stored items; a probe reuses the base's cached frozen features."""
        if self.config.method == "probe" and self.net.prior is None:
            from modelfab.tune.api import feature_getter

            features = feature_getter(store, self.backbone, self.base_model, modality)(rows)
            with torch.inference_mode():
                return torch.softmax(self.net.head(features), dim=1)
        from modelfab.tune.data import item_inputs

        return self.predict_proba(item_inputs(store, rows, modality))

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 32) -> Tensor:
        """Raw inputs (images as arrays/paths, or strings) -> (N, C) class probabilities."""
        if len(inputs) == 0:
            raise DataError("nothing to predict: no inputs")
        out = []
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                batch = self.backbone.preprocess(list(inputs[start : start + batch_size]))
                out.append(torch.softmax(self.net(batch), dim=1))
        return torch.cat(out)


def load_prior(info: dict[str, Any], tensors: dict[str, Tensor], ref: str) -> AnomalyPrior | None:
    """The stored anomaly prior of an L2 (None when it has none)."""
    spec = info.get("prior")
    if not spec:
        return None
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("prior.")}
    if not {"proj", "mean", "inv_cov", "fusion"} <= set(state):
        raise DataError(f"stored prior of {ref!r} is incomplete: has {sorted(state)}")
    channels, dim = state["proj"].shape
    prior = AnomalyPrior(spec["layers"], int(spec["smooth"]), int(info["positive"]), channels, dim, len(state["mean"]))
    try:
        prior.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"stored prior of {ref!r} does not fit: {str(exc).splitlines()[0]}") from None
    return prior.eval()


def load_scenario(store: Store, ref: str) -> ScenarioModel:
    """Rebuild an L2 registered by :func:`modelfab.tune.api.tune`."""
    model = store.get_model(ref)
    card = model_card(store, model.id)
    info = card.get("scenario")
    if model.tier != "L2" or not info or not model.weights_digest:
        raise ConfigError(f"model {ref!r} ({model.tier}, task {model.task}) is not a tuned scenario model")
    backbone, base_model = load_registered(store, info["base"])
    spec = InputSpec.from_dict(info["input_spec"])
    if spec.image_size != backbone.input_spec.image_size:
        backbone.input_spec = dataclasses.replace(backbone.input_spec, image_size=spec.image_size)
    cfg = TuneConfig.model_validate(info["config"])
    tensors = store.artifacts.get_tensors(model.weights_digest)
    delta = {k[6:]: v for k, v in tensors.items() if k.startswith("delta.")}
    METHODS.get(info["method"]).apply(backbone.module, cfg, delta)
    head = TaskHead(int(info["head"]["dim"]), len(info["classes"]), info["head"]["kind"], int(info["head"]["hidden"]))
    head_state = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        head.load_state_dict(head_state)
    except RuntimeError as exc:
        raise DataError(f"stored head of {ref!r} does not fit: {str(exc).splitlines()[0]}") from None
    net = ScenarioNet(backbone, head, load_prior(info, tensors, ref)).eval()
    return ScenarioModel(
        model,
        backbone,
        net,
        list(info["classes"]),
        info.get("positive"),
        info.get("threshold"),
        info["task"],
        cfg,
        base_model,
    )
