"""Runtimes, a catalog: run a registered model (an L2 or an exported child) as a probability function.

A :class:`Predictor` maps a preprocessed batch (vision: ``(N, 3, S, S)`` float32) to ``(N, C)``
class probabilities, and raw items to probabilities through :meth:`Predictor.predict_proba`.
Which runtime runs which stored format:

- ``torch``: ``scenario`` (an L2 rebuilt from its base + delta + head) and ``torchscript`` children;
- ``onnxruntime``: ``onnx`` children (fp32 and INT8).

The serving layer reuses :func:`load_predictor`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from modelfab.core.catalog import Catalog
from modelfab.core.errors import ConfigError, DataError
from modelfab.store.models import model_card
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.zoo.base import InputSpec


@dataclass
class Predictor:
    """A loaded model ready to predict, whatever the runtime."""

    model: Model
    runtime: str
    format: str  # scenario | onnx | torchscript
    threads: int
    classes: list[str]
    positive: int | None
    threshold: float | None
    task: str
    labels: str | None  # the dataset label view the model was trained on
    input_spec: InputSpec
    size_bytes: int  # bytes needed to run it: the standalone network / the exported artifact
    run: Callable[[Tensor], np.ndarray]  # (N, 3, S, S) -> (N, C) probabilities
    preprocess: Callable[[Sequence[Any]], Tensor]  # raw items -> (N, 3, S, S)

    def predict_proba(self, items: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """Raw inputs (images as arrays/paths) -> (N, C) probabilities."""
        if len(items) == 0:
            raise DataError("nothing to predict: no inputs")
        return np.concatenate(
            [self.run(self.preprocess(list(items[i : i + batch_size]))) for i in range(0, len(items), batch_size)]
        )

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """(N,) predicted class indices: the stored threshold on the positive class, else argmax."""
        if self.positive is not None and self.threshold is not None and probs.shape[1] == 2:
            return np.where(probs[:, self.positive] >= self.threshold, self.positive, 1 - self.positive)
        return probs.argmax(1)


@dataclass(frozen=True)
class Runtime:
    """One runtime: the stored formats it runs and its loader."""

    name: str
    formats: tuple[str, ...]
    load: Callable[[Store, Model, dict[str, Any], int], Predictor]


RUNTIMES: Catalog[Runtime] = Catalog("runtime")


def default_threads() -> int:
    """Threads used when none are asked for: torch's intra-op setting (at most the cores)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def model_format(store: Store, model: Model) -> tuple[str, dict[str, Any]]:
    """(format, card) of a runnable model; ConfigError for anything else (e.g. an L0 backbone)."""
    card = model_card(store, model.id)
    if "scenario" in card:
        return "scenario", card
    if "exported" in card:
        return str(card["exported"]["format"]), card
    raise ConfigError(
        f"model {model.name}:{model.version} ({model.tier}, task {model.task}) cannot be run: "
        "only tuned L2 scenario models and their exported children have a prediction head"
    )


def native_runtime(fmt: str) -> str:
    """The runtime that runs a stored format."""
    for entry in RUNTIMES:
        if fmt in entry.builder.formats:
            return entry.name
    raise ConfigError(f"no runtime runs format {fmt!r}")


def load_predictor(store: Store, ref: str | Model, runtime: str | None = None, threads: int | None = None) -> Predictor:
    """Load model ``ref`` with ``runtime`` (default: the one that runs its format)."""
    model = store.get_model(ref) if isinstance(ref, str) else ref
    fmt, card = model_format(store, model)
    name = runtime or native_runtime(fmt)
    rt = RUNTIMES.get(name)
    if fmt not in rt.formats:
        raise ConfigError(
            f"runtime: {name} cannot run {model.name}:{model.version} (format {fmt}); it runs "
            f"{', '.join(rt.formats)}. Export it first: modelfab export {model.name} --format onnx"
        )
    if threads is not None and threads < 1:
        raise ConfigError(f"threads: must be >= 1, got {threads}")
    return rt.load(store, model, card, threads or default_threads())


def _vision_preprocess(spec: InputSpec) -> Callable[[Sequence[Any]], Tensor]:
    from modelfab.zoo.vision.preprocess import preprocess_images

    size, mean, std = spec.image_size or 224, spec.mean or (0.0, 0.0, 0.0), spec.std or (1.0, 1.0, 1.0)
    return lambda items: preprocess_images(items, size, mean, std)


def _state_bytes(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in module.state_dict().values():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def torch_runner(net: torch.nn.Module, threads: int) -> Callable[[Tensor], np.ndarray]:
    """(N, 3, S, S) -> (N, C) probabilities through a torch module that outputs probabilities."""

    def run(batch: Tensor) -> np.ndarray:
        if torch.get_num_threads() != threads:  # the default is torch's own setting: no change
            torch.set_num_threads(threads)
        with torch.inference_mode():
            return net(batch).float().numpy()

    return run


def torchscript_runner(data: bytes, threads: int) -> Callable[[Tensor], np.ndarray]:
    """A runner over TorchScript archive bytes.

    Only archives our exporter wrote into the content-addressed artifact store are loaded here
    (by digest); TorchScript archives hold pickled constants and must never come from uploads.
    """
    net = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    return torch_runner(net, threads)


_ORT_SPINNING = True


def set_onnx_spinning(enabled: bool) -> None:
    """Whether the intra-op threads of ONNX Runtime sessions made from now on spin-wait for work.

    Spinning (onnxruntime's default) saves a wake-up per run when inference has the cores to itself, as in
    ``modelfab profile``; a server turns it off, because the spinning threads take the cores its event loop,
    decoding and preprocessing threads need between batches.
    """
    global _ORT_SPINNING
    _ORT_SPINNING = enabled


def onnx_session(data: bytes, threads: int) -> Any:
    """An onnxruntime CPU session over ONNX bytes with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if _ORT_SPINNING else "0")
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_runner(data: bytes, threads: int) -> Callable[[Tensor], np.ndarray]:
    """A runner over ONNX protobuf bytes (onnxruntime, CPU)."""
    session = onnx_session(data, threads)
    input_name = session.get_inputs()[0].name

    def run(batch: Tensor) -> np.ndarray:
        out = session.run(None, {input_name: np.ascontiguousarray(batch.numpy(), dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    return run


def scenario_predictor(store: Store, model: Model, threads: int | None = None) -> tuple[Predictor, torch.nn.Module]:
    """An L2 under torch and its exportable probability network (LoRA merged)."""
    from modelfab.compress.graph import probability_net
    from modelfab.tune.load import load_scenario

    sc = load_scenario(store, model.id)
    net = probability_net(sc)
    spec = sc.backbone.input_spec
    predictor = Predictor(
        model, "torch", "scenario", threads or default_threads(), sc.classes, sc.positive, sc.threshold, sc.task,
        sc.config.labels, spec, _state_bytes(net), torch_runner(net, threads or default_threads()),
        sc.backbone.preprocess,
    )
    return predictor, net


def _artifact(store: Store, model: Model) -> bytes:
    if not model.weights_digest:
        raise DataError(f"model {model.name}:{model.version} has no artifact")
    return store.artifacts.get_bytes(model.weights_digest)


def _exported(model: Model, card: dict[str, Any], runtime: str, threads: int, data: bytes,
              run: Callable[[Tensor], np.ndarray]) -> Predictor:
    info = card["exported"]
    spec = InputSpec.from_dict(info["input_spec"])
    return Predictor(
        model, runtime, str(info["format"]), threads, list(info["classes"]), info.get("positive"),
        info.get("threshold"), str(info["task"]), info.get("labels"), spec, len(data), run, _vision_preprocess(spec),
    )


def _load_torch(store: Store, model: Model, card: dict[str, Any], threads: int) -> Predictor:
    if "scenario" in card:
        return scenario_predictor(store, model, threads)[0]
    data = _artifact(store, model)
    return _exported(model, card, "torch", threads, data, torchscript_runner(data, threads))


def _load_onnx(store: Store, model: Model, card: dict[str, Any], threads: int) -> Predictor:
    data = _artifact(store, model)
    return _exported(model, card, "onnxruntime", threads, data, onnx_runner(data, threads))


RUNTIMES.add("torch", Runtime("torch", ("scenario", "torchscript"), _load_torch),
             summary="PyTorch eager (L2 scenario models) and TorchScript archives")
RUNTIMES.add("onnxruntime", Runtime("onnxruntime", ("onnx",), _load_onnx),
             summary="ONNX Runtime, CPU execution provider (fp32 and INT8 QDQ graphs)")
