"""The seam between serving and the runtimes: plan (which model, which runtime) and load.

:func:`plan_model` is cheap (registry and cards only) so the CLI can refuse a model before the
server starts: a derived model whose parity failed is refused with the reason (``deployable`` of
:mod:`modelfab.compress`). ``runtime="auto"`` serves the newest exported ONNX child of an L2 whose
parity passed under ONNX Runtime, else the L2 under torch. :func:`load_models` loads the plans:
ONNX children through the compress runtime catalog, LoRA/probe L2s sharing a base through
:class:`~modelfab.serve.sharing.SharedBase`, any other L2 on its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

from modelfab.core.errors import ConfigError
from modelfab.serve.sharing import SHAREABLE_METHODS, SharedBase
from modelfab.store.models import model_card
from modelfab.store.schema import Model
from modelfab.store.store import Store

FORMAT_RUNTIME = {"scenario": "torch", "torchscript": "torch", "onnx": "onnxruntime"}


@dataclass
class Plan:
    """What will be served for one requested reference."""

    ref: str  # as requested: id, name, name:version or name@alias
    model: Model  # what runs (the L2, or its exported child)
    source: Model  # the L2 scenario model (lineage: dataset version, label view)
    runtime: str  # torch | onnxruntime
    reason: str  # why this model/runtime (deployability, ONNX child found ...)
    info: dict[str, Any]  # the L2 card's scenario section
    card: dict[str, Any] = field(default_factory=dict)  # the served model's card

    @property
    def method(self) -> str | None:
        return str(self.info.get("method")) if self.runtime == "torch" and "scenario" in self.card else None

    @property
    def modality(self) -> str:
        return "text" if self.info["input_spec"]["modality"] == "text" else "image"


def _deployable(store: Store, model: Model) -> tuple[bool, str]:
    try:
        from modelfab.compress.parity import deployable
    except ImportError:  # compress not installed: only tuned L2s are servable
        ok = "scenario" in model_card(store, model.id)
        return ok, "a tuned L2 scenario model" if ok else f"{model.name}:{model.version} is not a tuned L2"
    return deployable(store, model)


def onnx_child(store: Store, model: Model) -> Model | None:
    """The newest ONNX child of ``model`` with passing parity (fp32 before INT8), if any."""
    with store.session() as s:
        children = list(s.scalars(select(Model).where(Model.parent_id == model.id)).all())
    found = []
    for child in children:
        exported = model_card(store, child.id).get("exported") or {}
        if exported.get("format") == "onnx" and _deployable(store, child)[0]:
            found.append((exported.get("precision") == "fp32", child.created_at, child))
    return max(found, key=lambda t: (t[0], t[1]))[2] if found else None


def plan_model(store: Store, ref: str, runtime: str = "auto") -> Plan:
    """Resolve ``ref`` and pick its runtime; ConfigError (with the reason) when it cannot be served."""
    if runtime not in ("auto", "torch", "onnxruntime"):
        raise ConfigError(f"runtime: unknown {runtime!r}; use auto, onnxruntime or torch")
    model = store.get_model(ref)
    ok, reason = _deployable(store, model)
    if not ok:
        raise ConfigError(f"cannot serve {ref}: {reason}")
    card = model_card(store, model.id)
    if "exported" in card:
        fmt = str(card["exported"]["format"])
        native = FORMAT_RUNTIME.get(fmt, "?")
        if runtime not in ("auto", native):
            raise ConfigError(f"runtime: {ref} is an exported {fmt} model; it runs under {native}, not {runtime}")
        source = store.get_model(str(card["exported"]["source"]))
        return Plan(ref, model, source, native, reason, model_card(store, source.id)["scenario"], card)
    if runtime in ("auto", "onnxruntime"):
        child = onnx_child(store, model)
        if child is not None:
            why = f"ONNX child {child.name}:{child.version} ({_deployable(store, child)[1]})"
            return Plan(ref, child, model, "onnxruntime", why, card["scenario"], model_card(store, child.id))
        if runtime == "onnxruntime":
            raise ConfigError(
                f"runtime onnxruntime: {ref} has no exported ONNX child with passing parity; "
                f"run: modelfab export {model.name} --format onnx"
            )
    return Plan(ref, model, model, "torch", reason, card["scenario"], card)


@dataclass
class LoadedModel:
    """A model ready for batches: ``prepare`` one decoded input, ``infer`` a list of prepared ones."""

    plan: Plan
    prepare: Callable[[Any], Any]  # decoded image (H, W, 3) uint8 / text -> one prepared input
    infer: Callable[[list[Any]], np.ndarray]  # prepared inputs -> (N, C) probabilities
    shared_base: str | None = None
    own_bytes: int = 0  # weights this model alone adds (shared: adapters + head; else its whole network)

    def warmup(self) -> None:
        """Run one input through (first-call allocations, lazy init) before the server is ready."""
        if self.plan.modality == "text":
            item: Any = "warm-up"
        else:
            size = int(self.plan.info["input_spec"].get("image_size") or 224)
            item = np.full((size, size, 3), 128, dtype=np.uint8)
        self.infer([self.prepare(item)])


def _vision(preprocess: Callable[[Sequence[Any]], Any], run: Callable[[Any], np.ndarray]) -> tuple[
    Callable[[Any], Any], Callable[[list[Any]], np.ndarray]
]:
    """Vision: prepare = one preprocessed (3, S, S) tensor; infer = stack to (N, 3, S, S) and run."""
    return (lambda item: preprocess([item])[0]), (lambda items: run(torch.stack(items)))


def _text(preprocess: Callable[[Sequence[Any]], Any], run: Callable[[Any], np.ndarray]) -> tuple[
    Callable[[Any], Any], Callable[[list[Any]], np.ndarray]
]:
    """Text: tokenise the whole batch at once (padding depends on the batch)."""
    return (lambda item: str(item)), (lambda items: run(preprocess(items)))


def _wrap(plan: Plan, preprocess: Callable[[Sequence[Any]], Any], run: Callable[[Any], np.ndarray],
          shared: str | None = None, own_bytes: int = 0) -> LoadedModel:
    prepare, infer = (_text if plan.modality == "text" else _vision)(preprocess, run)
    return LoadedModel(plan, prepare, infer, shared, own_bytes)


def _load_single(store: Store, plan: Plan, threads: int | None) -> LoadedModel:
    if plan.modality == "image":
        try:
            from modelfab.compress.runtimes import load_predictor
        except ImportError:
            pass
        else:
            predictor = load_predictor(store, plan.model, plan.runtime, threads)
            return _wrap(plan, predictor.preprocess, predictor.run, own_bytes=predictor.size_bytes)
    if plan.runtime != "torch":
        raise ConfigError(f"runtime {plan.runtime} is not available for {plan.ref}")
    from modelfab.tune.load import load_scenario

    sc = load_scenario(store, plan.model.id)
    net = sc.net.eval()

    def run(batch: Any) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(net(batch), dim=1).float().numpy()

    size = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    return _wrap(plan, sc.backbone.preprocess, run, own_bytes=size)


def load_models(store: Store, plans: Sequence[Plan], threads: int | None = None) -> list[LoadedModel]:
    """Load every plan; LoRA/probe L2s under torch that share a base (two or more) share one copy."""
    if threads is not None:
        torch.set_num_threads(threads)
    groups: dict[tuple[str, Any], list[Plan]] = defaultdict(list)
    for plan in plans:
        if plan.method in SHAREABLE_METHODS and not plan.info.get("prior"):  # a prior needs the patch maps
            groups[(str(plan.info["base"]), plan.info["input_spec"].get("image_size"))].append(plan)
    shared: dict[str, LoadedModel] = {}
    for (base_id, size), members in groups.items():
        if len(members) < 2:
            continue
        base = SharedBase(store, base_id, size)
        for plan in members:
            run, own = base.add(store, plan.model, plan.info)
            shared[plan.ref] = _wrap(plan, base.backbone.preprocess, run, base_id, own)
    return [shared[p.ref] if p.ref in shared else _load_single(store, p, threads) for p in plans]
