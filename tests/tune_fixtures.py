"""Tiny real datasets and bases for tuning tests (shared by contract and integration tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from modelfab.core.config import Settings
from modelfab.data import import_image_folder, import_text_table
from modelfab.store.store import Store


def make_store(home: Path) -> Store:
    return Store(Settings(home=home, db_url=f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts")))


def write_blobs(root: Path, per_class: int = 20, size: int = 48, seed: int = 0) -> Path:
    """Two classes a model can learn: 'ok' cells are smooth, 'ng' cells carry a dark crack line."""
    rng = np.random.default_rng(seed)
    for cls in ("ok", "ng"):
        for i in range(per_class):
            img = rng.normal(150, 12, size=(size, size)).clip(0, 255)
            if cls == "ng":
                row = rng.integers(8, size - 8)
                img[row - 1 : row + 2, 4 : size - 4] = rng.normal(30, 5)
            path = root / cls / f"{cls}{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(path)
    return root


def write_reviews(path: Path, n: int = 48) -> Path:
    good = ["good product", "very good quality", "fine panel ok", "bright good cell"]
    bad = ["bad product", "broken cell crack", "dark defect bad", "not ok very bad"]
    lines = ["text,label"]
    for i in range(n):
        lines.append(f"{(good if i % 2 else bad)[i % 4]} {i},{'pos' if i % 2 else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_image_store(home: Path, tmp: Path) -> Store:
    """A store with dataset ``blobs`` (40 images, two classes) and L0 ``lite0-64``."""
    from modelfab.zoo.registry import register_foundation

    store = make_store(home)
    import_image_folder(store, write_blobs(tmp / "blobs"), "blobs")
    register_foundation(store, "efficientnet-lite0", name="lite0-64", image_size=64)
    return store


def tiny_text_store(home: Path, tmp: Path) -> Store:
    """A store with dataset ``reviews`` (48 texts) and L0 ``tiny-bert`` (a 1-layer local encoder)."""
    from modelfab.zoo.registry import register_foundation
    from modelfab.zoo.testing import write_tiny_hf_model

    store = make_store(home)
    import_text_table(store, write_reviews(tmp / "reviews.csv"), "reviews")
    register_foundation(store, "local", name="tiny-bert", path=str(write_tiny_hf_model(tmp / "tiny-bert")))
    return store
