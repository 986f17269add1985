"""ONNX Runtime session options: the spin-wait switch the server turns off, results unchanged."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from modelfab.compress import runtimes
from modelfab.compress.runtimes import onnx_runner, onnx_session, set_onnx_spinning


@pytest.fixture
def graph() -> bytes:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Softmax(dim=1)).eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(1, 3, 5, 5),), buf, input_names=["x"], dynamic_axes={"x": {0: "n"}},
                      dynamo=False)
    return buf.getvalue()


@pytest.fixture
def restore_spinning() -> Iterator[None]:
    """Start from onnxruntime's default and put back whatever the process had (an in-process server of an
    earlier test may have turned spinning off)."""
    before = runtimes._ORT_SPINNING
    set_onnx_spinning(True)
    yield
    set_onnx_spinning(before)


def spinning_of(session: object) -> str:
    opts = session.get_session_options()  # type: ignore[attr-defined]
    return str(opts.get_session_config_entry("session.intra_op.allow_spinning"))


def test_spinning_switch_applies_to_new_sessions_only(graph: bytes, restore_spinning: None) -> None:
    before = onnx_session(graph, 2)
    assert spinning_of(before) == "1"  # onnxruntime's default, kept for profiling
    set_onnx_spinning(False)
    after = onnx_session(graph, 2)
    assert spinning_of(after) == "0"
    assert spinning_of(before) == "1"


def test_spinning_does_not_change_outputs(graph: bytes, restore_spinning: None) -> None:
    x = torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    spin = onnx_runner(graph, 2)(x)
    set_onnx_spinning(False)
    idle = onnx_runner(graph, 2)(x)
    np.testing.assert_array_equal(spin, idle)
    assert spin.shape == (3, 36)
