"""Contract suite over every BACKBONES entry: build, embedding shape, features, save -> load parity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelfab.core.catalog import Entry, contract_params
from modelfab.core.errors import MissingExtraError
from modelfab.store.artifacts import ArtifactStore
from modelfab.zoo import BACKBONES, Backbone, build_backbone, load_backbone, num_parameters, save_backbone
from modelfab.zoo.testing import write_tiny_hf_model

# Small, fast settings per entry (vision at 64 px); "local" gets a tiny model written by the fixture.
OVERRIDES: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {"image_size": 64},
    "efficientnet-lite2": {"image_size": 64},
    "minilm-l6": {"max_length": 32},
    "smollm2-135m": {"max_length": 32},
}
HEAVY = {"smollm2-135m"}
TEXTS = ["the panel is good", "a broken cell with a crack"]


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny-bert"), "text")


@pytest.fixture(scope="session")
def built(tiny_text_dir: Path) -> dict[str, Any]:
    """One backbone per entry, built once per session (a MissingExtraError is kept, then skipped)."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Backbone:
        if name not in cache:
            kwargs = dict(OVERRIDES.get(name, {}))
            if name == "local":
                kwargs["path"] = str(tiny_text_dir)
            try:
                cache[name] = build_backbone(name, **kwargs)
            except MissingExtraError as exc:
                cache[name] = exc
        value = cache[name]
        if isinstance(value, MissingExtraError):
            pytest.skip(str(value))
        return value

    return {"get": get}


def sample_items(backbone: Backbone) -> list[Any]:
    if backbone.input_spec.modality == "vision":
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (48, 56), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    return TEXTS


def run_embed(backbone: Backbone, items: list[Any]) -> torch.Tensor:
    backbone.module.eval()
    with torch.inference_mode():
        return backbone.embed(backbone.preprocess(items)).float()


def params(entry: Entry[Any]) -> Any:
    marks = [pytest.mark.slow] if entry.name in HEAVY else []
    return pytest.param(entry.name, marks=marks, id=entry.name)


NAMES = [params(p.values[0]) for p in contract_params(BACKBONES)]


@pytest.mark.parametrize("name", NAMES)
def test_embed_shape_and_card(name: str, built: dict[str, Any]) -> None:
    bb = built["get"](name)
    items = sample_items(bb)
    emb = run_embed(bb, items)
    assert emb.shape == (len(items), bb.embed_dim)
    assert torch.isfinite(emb).all()
    assert emb.std() > 0  # not a constant output
    assert bb.input_spec.modality in ("vision", "text", "lm")
    json.dumps({"config": bb.config, "spec": bb.input_spec.to_dict(), "source": bb.source.to_dict()})
    if getattr(bb, "frozen", False):
        assert num_parameters(bb) == 0
    else:
        assert num_parameters(bb) > 10_000 or name == "local"


@pytest.mark.parametrize("name", NAMES)
def test_features_are_named_batches(name: str, built: dict[str, Any]) -> None:
    bb = built["get"](name)
    items = sample_items(bb)
    with torch.inference_mode():
        feats = bb.features(bb.preprocess(items))
    assert "pooled" in feats
    for key, value in feats.items():
        assert value.shape[0] == len(items), key
    with torch.inference_mode():
        emb = bb.embed(bb.preprocess(items))
    torch.testing.assert_close(feats["pooled"], emb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_gives_same_output(name: str, built: dict[str, Any], tmp_path: Path) -> None:
    bb = built["get"](name)
    items = sample_items(bb)
    store = ArtifactStore(tmp_path / "artifacts")
    saved = save_backbone(bb, store)
    assert store.exists(saved.weights) and store.exists(saved.card)
    loaded = load_backbone(store, saved.weights, saved.card)
    assert loaded.name == bb.name
    assert num_parameters(loaded) == num_parameters(bb)
    torch.testing.assert_close(run_embed(loaded, items), run_embed(bb, items), rtol=1e-5, atol=1e-6)
