"""A ``modelfab pretrain`` L0 is a backbone: it loads with ``load_registered``, tunes (probe, LoRA)
and adapts (SimCSE) like any zoo base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from modelfab.cli.pretrain import register_result
from modelfab.pretrain.config import load_run_config
from modelfab.pretrain.run import run_pretraining
from modelfab.store.artifacts import ArtifactStore
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, load_scenario, tune
from modelfab.zoo import embed_items, load_backbone, save_backbone
from modelfab.zoo.registry import load_registered
from tests.tune_fixtures import make_store, write_reviews

TEXTS = ["good product 3", "broken cell crack", "", "very good quality and a much longer review " * 8]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store holding the L0 ``tiny-l0`` (pretrained 6 steps on a tiny corpus) and dataset ``reviews``."""
    from modelfab.data import import_text_table

    tmp = tmp_path_factory.mktemp("pretrain-base")
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("".join(f"good product {i % 11}, broken cell {i % 7} crack\n" for i in range(1500)))
    cfg_path = tmp / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "tiny-l0",
        "out_dir": str(tmp / "run"),
        "data": {"corpus": str(corpus), "tokenizer": {"vocab_size": 280}},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 32},
        "train": {"seq_len": 16, "micro_batch": 4, "max_steps": 6, "plots": False, "device": "cpu"},
    }))
    cfg = load_run_config(cfg_path)
    result = run_pretraining(cfg)
    store = make_store(tmp / "home")
    model = register_result(store, cfg, result)
    import_text_table(store, write_reviews(tmp / "reviews.csv"), "reviews")
    return {"store": store, "model": model, "result": result, "tmp": tmp}


@pytest.mark.timeout(120)
def test_registered_l0_loads_as_a_backbone(pretrained: dict[str, Any], tmp_path: Path) -> None:
    store: Store = pretrained["store"]
    backbone, model = load_registered(store, "tiny-l0")
    assert (model.tier, model.task) == ("L0", "lm")
    assert backbone.name == "modelfab-lm" and backbone.input_spec.modality == "lm"
    assert backbone.embed_dim == 16 and backbone.source.licence == "user"
    card = store.artifacts.get_json(model.card_digest)
    assert card["backbone"]["builder"] == "modelfab-lm" and card["corpus_sha256"] and card["tokenizer"]
    assert card["backbone"]["files"]["tokenizer.json"] == card["tokenizer"]

    emb = embed_items(backbone, TEXTS)
    assert emb.shape == (len(TEXTS), 16) and torch.isfinite(emb).all()
    batch = backbone.preprocess(TEXTS)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] == 32  # truncated to max_seq_len
    with torch.inference_mode():
        feats = backbone.features(batch)
    assert feats["hidden"].shape[:2] == batch["input_ids"].shape and feats["pooled"].shape == (len(TEXTS), 16)
    # padding does not change a text's embedding (right padding under causal attention)
    alone = embed_items(backbone, TEXTS[:1])
    torch.testing.assert_close(alone[0], emb[0], rtol=1e-4, atol=1e-5)

    # the stored weights are those the run exported
    from modelfab.pretrain.export import load_pretrained

    exported, _ = load_pretrained(pretrained["result"].model_dir)
    for key, value in exported.state_dict().items():
        assert torch.equal(backbone.module.state_dict()[key], value), key

    artifacts = ArtifactStore(tmp_path / "artifacts")
    saved = save_backbone(backbone, artifacts)
    again = load_backbone(artifacts, saved.weights, saved.card)
    torch.testing.assert_close(embed_items(again, TEXTS), emb)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["probe", "lora", "partial", "full"])
def test_tune_from_pretrained_l0(pretrained: dict[str, Any], method: str) -> None:
    store: Store = pretrained["store"]
    l0 = pretrained["model"]
    cfg = TuneConfig(method=method, epochs=2, seed=0, partial_blocks=1)
    result = tune(store, base="tiny-l0", data="reviews", name=f"reviews-{method}", cfg=cfg)
    assert result.model.tier == "L2" and result.model.parent_id == l0.id
    assert 0.0 <= result.val_metrics["accuracy"] <= 1.0
    if method in ("lora", "partial"):
        assert 0 < result.trainable_fraction < 1
    scenario = load_scenario(store, f"reviews-{method}")  # the L2 reloads on top of the L0
    probs = scenario.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(TEXTS)))


@pytest.mark.timeout(120)
def test_simcse_adapts_pretrained_l0(pretrained: dict[str, Any]) -> None:
    from modelfab.adapt import AdaptConfig, adapt_model

    store: Store = pretrained["store"]
    cfg = AdaptConfig(objective="simcse", steps=2, batch_size=8, lr=1e-3, max_length=16, threads=2)
    result = adapt_model(store, "tiny-l0", "reviews", "tiny-l1", cfg, log=lambda m: None)
    assert result.model.tier == "L1" and result.model.parent_id == pretrained["model"].id
    l1, _ = load_registered(store, "tiny-l1")
    assert l1.name == "modelfab-lm" and embed_items(l1, TEXTS).shape == (len(TEXTS), 16)
