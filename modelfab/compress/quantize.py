"""Static INT8 quantization of an fp32 ONNX graph with onnxruntime (QDQ, per-channel weights).

Measured on this machine (STACK_NOTES): dynamic INT8 and per-tensor static INT8 of EfficientNet-Lite
are broken (logit differences of 5-6.5), per-channel static QDQ keeps the ELPV AUROC. Activation
ranges come from a :class:`CalibrationDataReader` over real preprocessed images (MinMax). The final
Softmax stays in fp32 so probabilities are not rounded to 1/256 steps.

Speed (ELPV Lite0/Lite2 L2s, onnxruntime 1.32, x86): activations are uint8 by default. With int8
activations (S8S8) onnxruntime left 18 of Lite0's 49 convolutions as DequantizeLinear -> fp32 Conv ->
QuantizeLinear and the INT8 graph was slower than fp32; with uint8 activations (U8S8) all 49 fuse to
QLinearConv. Zero padding that the exporter computes at run time (Shape -> ... -> Pad before the
stride-2 convolutions) is folded into the convolutions first (:func:`fold_pads`), so no fp32 Pad with
a Dequantize/Quantize pair around it is left between two quantized convolutions.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from modelfab.core.errors import ConfigError

EXCLUDED_OP_TYPES = ("Softmax",)
ACTIVATION_TYPES = ("uint8", "int8")


class BatchReader:
    """An onnxruntime ``CalibrationDataReader`` over preprocessed (B, 3, S, S) batches."""

    def __init__(self, input_name: str, batches: list[Tensor]) -> None:
        self.input_name = input_name
        self.batches = batches
        self._it: Iterator[dict[str, np.ndarray]] = self._feeds()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        return iter([{self.input_name: np.ascontiguousarray(b.numpy(), dtype=np.float32)} for b in self.batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._feeds()

    def __len__(self) -> int:
        return len(self.batches)


def _calibration_reader(input_name: str, batches: list[Tensor]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(BatchReader, CalibrationDataReader):
        pass

    return Reader(input_name, batches)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's root-logger advice while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _runtime_pads(model: Any, pads: list[Any]) -> list[np.ndarray] | None:
    """Values of the ``pads`` inputs of Pad nodes, or None when they depend on the batch size."""
    import onnx
    import onnxruntime as ort

    inp = model.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    if not dims or not all(dims):
        return None  # a dynamic spatial axis: the pads really are run-time values
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [n.input[1] for n in pads]
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    runs = [session.run(names, {inp.name: np.zeros([b, *dims], np.float32)}) for b in (1, 2)]
    if any(not np.array_equal(a, b) for a, b in zip(*runs, strict=True)):
        return None
    return [np.asarray(v, np.int64) for v in runs[0]]


def _drop_dead_nodes(graph: Any) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def fold_pads(fp32: bytes) -> bytes:
    """Fold zero Pad nodes (pads computed at run time from the static input size) into the next Conv.

    The legacy exporter writes "same" padding of EfficientNet-Lite's stride-2 convolutions as
    Shape -> Gather -> ... -> Pad. The result is the same function with constant Conv ``pads``;
    graphs without such a Pad, or whose pads depend on the batch size, are returned unchanged.
    """
    import onnx

    model = onnx.load_from_string(fp32)
    graph = model.graph
    consts = {i.name for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    candidates = []
    for n in graph.node:
        if n.op_type != "Pad" or len(n.input) < 2 or len(n.input) > 3 or n.input[1] in consts:
            continue
        mode = next((a.s for a in n.attribute if a.name == "mode"), b"constant")
        users = consumers.get(n.output[0], [])
        if mode != b"constant" or (len(n.input) == 3 and n.input[2]) or len(users) != 1:
            continue  # a non-zero pad value (constant_value input) is left alone
        conv = users[0]
        auto_pad = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
        if conv.op_type == "Conv" and conv.input[0] == n.output[0] and auto_pad == b"NOTSET":
            candidates.append((n, conv))
    if not candidates:
        return fp32
    values = _runtime_pads(model, [pad for pad, _ in candidates])
    if values is None:
        return fp32
    for (pad, conv), value in zip(candidates, values, strict=True):
        rank = len(value) // 2
        begin, end = value[:rank], value[rank:]
        if rank < 3 or (value < 0).any() or begin[:2].any() or end[:2].any():
            continue  # only non-negative spatial padding folds into Conv
        old = next((a for a in conv.attribute if a.name == "pads"), None)
        spatial = rank - 2
        current = list(old.ints) if old is not None else [0] * (2 * spatial)
        merged = [int(a + b) for a, b in zip(current, [*begin[2:], *end[2:]], strict=True)]
        if old is not None:
            conv.attribute.remove(old)
        conv.attribute.append(onnx.helper.make_attribute("pads", merged))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
    _drop_dead_nodes(graph)
    return model.SerializeToString()


def quantize_int8(
    fp32: bytes, batches: list[Tensor], *, per_channel: bool = True, activations: str = "uint8"
) -> bytes:
    """INT8 QDQ ONNX bytes of the fp32 graph ``fp32``, calibrated on ``batches``.

    ``activations``: ``uint8`` (default; onnxruntime's fast U8S8 kernels on x86) or ``int8``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not batches:
        raise ConfigError("quantize: no calibration batches")
    if activations not in ACTIVATION_TYPES:
        raise ConfigError(f"activations: unknown {activations!r}; use {' or '.join(ACTIVATION_TYPES)}")
    fp32 = fold_pads(fp32)
    graph = onnx.load_from_string(fp32)
    excluded = [n.name for n in graph.graph.node if n.op_type in EXCLUDED_OP_TYPES]
    input_name = graph.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="modelfab-int8-") as tmp, _quiet():
        raw, src, dst = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(fp32)
        quant_pre_process(str(raw), str(src))  # shape inference + graph optimisation, as onnxruntime advises
        quantize_static(
            str(src),
            str(dst),
            _calibration_reader(input_name, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return dst.read_bytes()
