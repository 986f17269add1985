"""Small helpers shared by several test modules (real files and sockets, nothing mocked)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cell(path: Path, defect: bool, rng: np.random.Generator) -> None:
    """A 48 px grey solar-cell-like PNG; a defective one carries a dark horizontal crack."""
    img = rng.normal(150, 8, size=(48, 48)).clip(0, 255)
    if defect:
        row = int(rng.integers(8, 40))
        img[row - 1 : row + 2, 4:44] = 20  # a dark crack
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)
