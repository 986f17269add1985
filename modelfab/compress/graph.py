"""Turn a loaded L2 into an exportable graph and serialise it (ONNX protobuf or TorchScript archive).

The exported graph takes the backbone's preprocessed batch (vision: ``(N, 3, S, S)``) and outputs
``(N, C)`` probabilities (softmax inside the graph); the batch axis is dynamic.  LoRA adapters are
merged into their base layers first, so the graph holds plain convolutions and linear layers.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from modelfab.core.errors import ConfigError

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


class ProbabilityNet(nn.Module):
    """``(N, 3, S, S)`` preprocessed images -> ``(N, C)`` probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, S, S) -> (N, C)
        return torch.softmax(self.net(x), dim=1)


def merge_adapters(module: nn.Module) -> int:
    """Merge PEFT LoRA adapters into their base layers and put the base layers back; returns the count."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft absent: nothing can have been injected
        return 0
    wrapped = [(name, sub) for name, sub in module.named_modules() if isinstance(sub, BaseTunerLayer)]
    for name, sub in wrapped:
        sub.merge()
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, sub.get_base_layer())
    return len(wrapped)


def probability_net(scenario: Any) -> ProbabilityNet:
    """The exportable network of a loaded :class:`~modelfab.tune.load.ScenarioModel` (adapters merged)."""
    if scenario.backbone.input_spec.modality != "vision":
        raise ConfigError(
            f"export: {scenario.model.name} is a {scenario.backbone.input_spec.modality} model; only vision "
            "models are exported (text encoders take tokenizer output dicts input_ids/attention_mask that the "
            "exported runtime would have to tokenize outside the graph, which is not built yet)"
        )
    merge_adapters(scenario.net.encoder)
    return ProbabilityNet(scenario.net).eval()


_OP_PATTERNS = (
    re.compile(r"operator '([\w:.]+)'"),
    re.compile(r"Unsupported: ONNX export of ([\w:.]+)"),
    re.compile(r"\b(aten::\w+|prim::\w+|onnx::\w+)"),
)


def unsupported_op(exc: BaseException) -> str | None:
    """The operator named in an exporter error (``aten::linalg_eigvals``), if any."""
    text = str(exc)
    for pattern in _OP_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def export_onnx(module: nn.Module, example: Tensor, opset: int = OPSET, *, fold: bool = True) -> bytes:
    """ONNX protobuf bytes of ``module`` (legacy TorchScript-based exporter, dynamic batch axis).

    An operator the exporter cannot translate raises :class:`ConfigError` naming it.
    """
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                buf,  # type: ignore[arg-type]  # the legacy exporter writes to file-like objects too
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as exc:  # the exporter raises RuntimeError subclasses and its own error types
        op = unsupported_op(exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if op:
            raise ConfigError(f"export: operator {op} cannot be exported to ONNX opset {opset} ({first})") from None
        raise ConfigError(f"export: the ONNX exporter failed: {first}") from None
    if not fold:
        return buf.getvalue()
    from modelfab.compress.quantize import fold_pads

    # "same" padding computed at run time (Shape -> ... -> Pad) becomes constant Conv pads: the same
    # function, about 1.7x faster at batch 32 in ONNX Runtime on this CPU (docs/compress.md)
    return fold_pads(buf.getvalue())


def export_torchscript(module: nn.Module, example: Tensor) -> bytes:
    """A TorchScript archive (traced) of ``module``.

    TorchScript archives are zip files with pickled constants inside: they are only ever loaded
    from our own content-addressed artifact store by digest (written by :func:`export_torchscript`),
    never from user uploads.
    """
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
            torch.jit.save(traced, buf)
    except Exception as exc:  # tracing errors come as RuntimeError with the op in the text
        op = unsupported_op(exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"export: TorchScript tracing failed{f' at {op}' if op else ''}: {first}") from None
    return buf.getvalue()


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}
