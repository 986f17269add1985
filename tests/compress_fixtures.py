"""Tiny real L2s for the compress tests: Lite0 at 64 px tuned on the ``blobs`` images."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from modelfab.data import import_image_folder
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, tune
from tests.tune_fixtures import tiny_image_store, write_blobs


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread (2 shared cores: two spinning threads are several times slower), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compress_store(home: Path, tmp: Path, *, swapped: bool = False) -> Store:
    """``tiny_image_store`` plus the probe L2 ``blobs-probe``.

    ``swapped``: also the dataset ``blobs-swapped`` (the same kind of images with the class folders
    exchanged) and the probe L2 ``swapped-probe`` trained on it: a worse model on ``blobs``.
    """
    store = tiny_image_store(home, tmp)
    tune(store, base="lite0-64", data="blobs", name="blobs-probe", cfg=TuneConfig(method="probe"))
    if swapped:
        root = write_blobs(tmp / "swap-src", seed=1)
        dst = tmp / "swapped"
        shutil.copytree(root / "ok", dst / "ng")
        shutil.copytree(root / "ng", dst / "ok")
        import_image_folder(store, dst, "blobs-swapped")
        tune(store, base="lite0-64", data="blobs-swapped", name="swapped-probe", cfg=TuneConfig(method="probe"))
    return store


def write_few(root: Path, n: int = 3) -> Path:
    """A folder of ``n`` images per class: too few for every split to get an item."""
    src = write_blobs(root.parent / f"{root.name}-src", per_class=n, seed=2)
    shutil.copytree(src, root)
    return root
