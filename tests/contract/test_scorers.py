"""Every SCORERS entry passes the same suite on a tiny random-weight EfficientNet-Lite0 (64 px) and
generated images: fit, score shapes, anomalies score higher, register -> load -> same scores, heat-map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from modelfab.core.catalog import contract_params
from modelfab.data import import_image_folder
from modelfab.evaluate.curves import auroc
from modelfab.screen import SCORERS
from modelfab.screen.api import fit_screen, row_loader
from modelfab.screen.heatmap import save_heatmap
from modelfab.screen.storage import load_screener, load_vision_backbone, make_screener
from modelfab.store.store import Store
from tests.tune_fixtures import make_store

SMALL: dict[str, dict[str, Any]] = {  # fast settings per entry
    "knn-memory": {"coreset_ratio": 0.25, "chunk": 256},
    "gaussian": {"proj_dim": 32},
    "embedding-knn": {"k": 3},
}


def cell(rng: np.random.Generator, crack: bool, size: int = 48) -> np.ndarray:
    """A smooth grey cell; a defect carries a dark crack line."""
    img = rng.normal(150, 8, size=(size, size)).clip(0, 255)
    if crack:
        row = int(rng.integers(10, size - 10))
        img[row - 1 : row + 2, 6 : size - 6] = 25
    return img.astype(np.uint8)


def write_cells(root: Path, normals: int = 10, defects: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls, n in (("good", normals), ("crack", defects)):
        for i in range(n):
            path = root / cls / f"{cls}{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(cell(rng, cls == "crack")).save(path)
    return root


@pytest.fixture(scope="module")
def screen_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Dataset ``cells`` (unlabeled normals) and a random-weight Lite0 at 64 px."""
    from modelfab.zoo.registry import register_foundation

    tmp = tmp_path_factory.mktemp("screen")
    store = make_store(tmp / "home")
    rng = np.random.default_rng(1)
    normal_dir = tmp / "normal"
    for i in range(10):
        normal_dir.mkdir(exist_ok=True)
        Image.fromarray(cell(rng, False)).save(normal_dir / f"n{i:02d}.png")
    import_image_folder(store, normal_dir, "cells", unlabeled=True)
    torch.manual_seed(0)
    register_foundation(store, "efficientnet-lite0", name="rand-lite0", pretrained=False, image_size=64)
    return store


def probe_images(seed: int = 7) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    imgs = [cell(rng, False) for _ in range(5)] + [cell(rng, True) for _ in range(5)]
    return imgs, np.array([0] * 5 + [1] * 5)


@pytest.mark.parametrize("entry", contract_params(SCORERS))
def test_scorer_contract(entry, screen_store: Store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = fit_screen(screen_store, backbone="rand-lite0", normal="cells@1", split=None, scorer=entry.name,
                     config=SMALL.get(entry.name), name=f"cells-{entry.name}")
    model = res.model
    assert model.tier == "L2" and model.task == "screening"
    assert model.parent_id == screen_store.get_model("rand-lite0").id
    assert model.dataset_version_id == screen_store.get_dataset_version("cells@1").id
    assert res.items == 10 and "no visible labels" in res.rule
    # a fresh fit with the same config gives the same scores as the registered, reloaded one
    backbone, _ = load_vision_backbone(screen_store, "rand-lite0")
    fresh = make_screener(backbone, entry.name, SMALL.get(entry.name))
    rows = screen_store.version_items("cells@1")
    fresh.fit(rows, row_loader(screen_store))
    imgs, y = probe_images()
    scores, maps = fresh.score(imgs)
    assert scores.shape == (10,) and torch.isfinite(scores).all()
    assert auroc(y, scores.numpy()) >= 0.9, scores  # a crack is easy to see, even for random features
    loaded, _ = load_screener(screen_store, model.id)
    again, maps2 = loaded.score(imgs)
    assert torch.allclose(scores, again, rtol=1e-4, atol=1e-6)
    if fresh.scorer.kind == "patch":
        assert maps is not None and maps2 is not None and maps.shape[0] == 10 and maps.ndim == 3
        assert torch.allclose(maps, maps2, rtol=1e-4, atol=1e-6)
        png = save_heatmap(np.repeat(imgs[9][:, :, None], 3, 2), maps[9], tmp_path / "h.png", score=float(scores[9]))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as im:
            assert im.width > 100
    else:
        assert maps is None


@pytest.mark.parametrize("entry", contract_params(SCORERS))
def test_scorer_refuses_unfitted_and_text(entry, screen_store: Store) -> None:  # type: ignore[no-untyped-def]
    from modelfab.core.errors import ConfigError, DataError

    scorer = SCORERS.get(entry.name)(entry.config(**SMALL.get(entry.name, {})))
    with pytest.raises(DataError, match="not fitted"):
        scorer.state()
    backbone, _ = load_vision_backbone(screen_store, "rand-lite0")
    with pytest.raises(ConfigError, match="unknown feature"):
        make_screener(backbone, entry.name, {"layers": ["block99"]})
    with pytest.raises(DataError, match="no normal images"):
        make_screener(backbone, entry.name, SMALL.get(entry.name)).fit([])


def test_tuned_l2_backbone_feeds_a_scorer(tmp_path: Path) -> None:
    """An L2's adapted backbone (here a probe on Lite0 at 64 px) is a valid screening backbone."""
    from modelfab.tune import TuneConfig, tune
    from tests.tune_fixtures import tiny_image_store

    store = tiny_image_store(tmp_path / "home", tmp_path)
    l2 = tune(store, base="lite0-64", data="blobs", name="blobs-probe", cfg=TuneConfig(method="probe", epochs=1)).model
    res = fit_screen(store, backbone=l2.id, normal="blobs@1", scorer="gaussian", config={"proj_dim": 16},
                     name="blobs-screen")
    assert res.model.parent_id == l2.id and "non-" in res.rule
    screener, _ = load_screener(store, res.model.id)
    rows = [r for r in store.version_items("blobs@1") if r.split == "test"]
    scores, maps = screener.score(rows, row_loader(store))
    assert scores.shape == (len(rows),) and maps is not None and maps.shape[0] == len(rows)
    store.close()
