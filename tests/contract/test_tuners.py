"""Every tuning method passes the same suite on tiny real models: trains, registers with lineage,
reloads to the same predictions, stores only its delta."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelfab.core.catalog import contract_params
from modelfab.core.errors import ConfigError
from modelfab.store.models import list_models
from modelfab.store.store import Store
from modelfab.tune import METHODS, TuneConfig, load_scenario, tune
from modelfab.tune.data import item_inputs
from tests.tune_fixtures import tiny_image_store, tiny_text_store, write_blobs


@pytest.fixture(scope="module")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    tmp = tmp_path_factory.mktemp("tune-img")
    return tiny_image_store(tmp / "home", tmp)


@pytest.fixture(scope="module")
def text_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    tmp = tmp_path_factory.mktemp("tune-txt")
    return tiny_text_store(tmp / "home", tmp)


@pytest.mark.parametrize("entry", contract_params(METHODS))
def test_vision_method_contract(entry, image_store: Store) -> None:  # type: ignore[no-untyped-def]
    cfg = TuneConfig(method=entry.name, epochs=2, batch_size=8, partial_blocks=2, patience=2)
    res = tune(image_store, base="lite0-64", data="blobs", name=f"blobs-{entry.name}", cfg=cfg)
    model = res.model
    base = image_store.get_model("lite0-64")
    assert model.tier == "L2" and model.parent_id == base.id and model.task == "image-defect"
    assert model.dataset_version_id == image_store.get_dataset_version("blobs@1").id
    assert model.config["method"] == entry.name and "val" in model.metrics
    # reload from the registry: the same probabilities as the trained network on validation items
    scenario = load_scenario(image_store, model.id)
    rows = [r for r in image_store.version_items("blobs") if r.split == "val"]
    probs = scenario.predict_proba(item_inputs(image_store, rows, "image"))
    assert probs.shape == (len(rows), 2) and torch.allclose(probs.sum(1), torch.ones(len(rows)), atol=1e-5)
    acc = float(
        (probs.argmax(1) == torch.tensor([scenario.classes.index(r.labels["label"]) for r in rows])).float().mean()
    )
    assert abs(acc - res.val_metrics["accuracy"]) < 1e-6
    assert scenario.threshold is not None and 0.0 <= scenario.threshold <= 1.0
    frac = res.trainable_fraction
    full_bytes = 4 * base.params
    if entry.name == "probe":
        assert frac == 0.0 and res.artifact_bytes < 0.01 * full_bytes
    elif entry.name == "lora":
        assert 0.01 <= frac <= 0.06, frac  # rank 4 on the 1x1 convs
        assert res.artifact_bytes <= 0.10 * full_bytes
    elif entry.name == "partial":
        assert 0.0 < frac < 1.0
    else:
        assert frac == pytest.approx(1.0) and res.artifact_bytes >= 0.9 * full_bytes


@pytest.mark.parametrize("method", ["probe", "lora", "full"])
def test_text_method_contract(method: str, text_store: Store) -> None:
    res = tune(
        text_store,
        base="tiny-bert",
        data="reviews",
        name=f"rev-{method}",
        cfg=TuneConfig(method=method, epochs=2, batch_size=8),
    )
    assert res.model.task == "text-classification"
    scenario = load_scenario(text_store, res.model.id)
    probs = scenario.predict_proba(["good product 1", "bad product 2"])
    assert probs.shape == (2, 2)


def test_partial_needs_blocks(text_store: Store) -> None:
    with pytest.raises(ConfigError, match="partial_blocks"):
        tune(
            text_store,
            base="tiny-bert",
            data="reviews",
            name="rev-partial",
            cfg=TuneConfig(method="partial", partial_blocks=5, epochs=1),
        )


def test_unsupported_pair(image_store: Store, text_store: Store, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="text-classification does not fit image"):
        tune(image_store, base="lite0-64", data="blobs", name="x", cfg=TuneConfig(task="text-classification"))


def test_probe_with_anomaly_prior(image_store: Store, tmp_path: Path) -> None:
    """The prior is fitted on the unlabeled pool, stored with the L2, reloaded to the same predictions,
    and its fused logits are exactly the documented mix of probe margin and anomaly."""
    from modelfab.data import import_image_folder
    from modelfab.data.tasks import TaskView

    # the same kind of blobs, with the defect ('ng', the dark line) as the positive class
    task = TaskView(type="binary", classes=["ok", "ng"], positive="ng")
    folder = write_blobs(tmp_path / "b", seed=1)
    import_image_folder(image_store, folder, "blobs-defect", tasks={"defect": task.model_dump()})
    cfg = TuneConfig(prior="gaussian", prior_dim=16)
    res = tune(image_store, base="lite0-64", data="blobs-defect", name="blobs-prior", cfg=cfg)
    info = res.trained.card["scenario"]["prior"]
    rows = image_store.version_items("blobs-defect")
    assert info["pool_images"] == sum(r.split in ("train", None) for r in rows)
    assert info["dim"] == 16 and 0.0 <= info["weight"] <= 1.0 and info["trim"] in (0.0, 0.1, 0.2, 0.35, 0.5)
    # blobs' defects are dark lines on smooth cells: the unlabeled prior alone must rank them
    assert info["val_auroc_prior_alone"] > 0.9, info
    tensors = image_store.artifacts.get_tensors(res.model.weights_digest or "")
    assert {"prior.proj", "prior.mean", "prior.inv_cov", "prior.fusion"} <= set(tensors)
    scenario = load_scenario(image_store, res.model.id)
    assert scenario.net.prior is not None
    val = [r for r in rows if r.split == "val"]
    inputs = item_inputs(image_store, val, "image")
    probs = scenario.predict_proba(inputs)
    truth = torch.tensor([scenario.classes.index(r.labels["label"]) for r in val])
    assert abs(float((probs.argmax(1) == truth).float().mean()) - res.val_metrics["accuracy"]) < 1e-6
    assert torch.allclose(scenario.predict_rows(image_store, val, "image"), probs, atol=1e-6)
    # the forward pass is the documented fusion: softmax(defect) = sigmoid(w z(margin) + (1 - w) z(anomaly))
    prior, pos = scenario.net.prior, scenario.positive
    assert pos is not None
    batch = scenario.backbone.preprocess(inputs)
    with torch.inference_mode():
        feats = scenario.backbone.features(batch, [*prior.layers, "pooled"])  # type: ignore[attr-defined]
        logits = scenario.net.head(feats["pooled"])
        w, mu_m, sd_m, mu_a, sd_a = prior.fusion.tolist()
        s = w * (logits[:, pos] - logits[:, 1 - pos] - mu_m) / sd_m + (1 - w) * (prior.anomaly(feats) - mu_a) / sd_a
    assert torch.allclose(probs[:, pos], torch.sigmoid(s), atol=1e-5)
    # the label queue's uncertainty reads the whole model (prior included), not the head on embeddings
    import shutil

    from modelfab.screen.queue import label_queue

    flat = tmp_path / "unlabeled"
    flat.mkdir()
    for src in sorted(folder.rglob("*.png"))[::4]:  # 10 cells of both kinds, no class folders: unlabeled
        shutil.copy(src, flat / f"{src.parent.name}-{src.name}")
    import_image_folder(image_store, flat, "blobs-unlabeled", tasks={"defect": task.model_dump()})
    pool = image_store.version_items("blobs-unlabeled")
    whole = scenario.predict_rows(image_store, pool, "image")  # (10, 2) the full forward, prior included
    by_key = {r.key: max(p) for r, p in zip(pool, whole.tolist(), strict=True)}
    queue = label_queue(image_store, "blobs-unlabeled", budget=4, selector="uncertainty", split="all",
                        model="blobs-prior", fmt="csv")
    assert queue.probabilities == "model" and len(queue.items) == 4
    for item in queue.items:
        assert item.confidence is not None and abs(item.confidence - by_key[item.key]) < 1e-5
    # compressions that change the backbone would silently invalidate the prior: refused by name
    from modelfab.compress import extract

    for extractor, options in (("prune", {}), ("elastic", {"max_latency_ms": 100.0})):
        with pytest.raises(ConfigError, match=f"{extractor}: this L2's anomaly prior"):
            extract(image_store, "blobs-prior", extractor, options)


def test_prior_refuses_what_it_cannot_do(image_store: Store, text_store: Store) -> None:
    with pytest.raises(ValueError, match="use method probe, not lora"):
        TuneConfig(prior="gaussian", method="lora")
    with pytest.raises(ConfigError, match="only image-defect"):
        tune(text_store, base="tiny-bert", data="reviews", name="x", cfg=TuneConfig(prior="gaussian"))
    for bad in ("pooled", "block99"):
        with pytest.raises(ConfigError, match=f"prior_layers: \\['{bad}'\\] are not spatial maps"):
            tune(image_store, base="lite0-64", data="blobs", name="x",
                 cfg=TuneConfig(prior="gaussian", prior_layers=[bad]))
    assert not [m for m in list_models(image_store) if m.name == "x"]  # nothing registered


def test_lp_ft_starts_the_head_from_the_probe(image_store: Store) -> None:
    """head_init: probe (linear probing, then fine-tuning): with a negligible learning rate the tuned
    head stays the probe's head; from a random start it does not."""
    probe = tune(image_store, base="lite0-64", data="blobs", name="lp-probe", cfg=TuneConfig(method="probe"))
    heads = {}
    for init in ("probe", "random"):
        cfg = TuneConfig(method="lora", head_init=init, lr=1e-9, epochs=1, batch_size=8, augment="none")
        heads[init] = tune(image_store, base="lite0-64", data="blobs", name=f"lp-{init}", cfg=cfg).trained.tensors
    want = probe.trained.tensors
    weight = [k for k in want if k.startswith("head.net.")]
    assert weight and all(torch.allclose(heads["probe"][k], want[k], atol=1e-5) for k in weight)
    assert not all(torch.allclose(heads["random"][k], want[k], atol=1e-3) for k in weight)


def test_lora_on_a_causal_lm_leaves_the_output_embedding_alone(text_store: Store, tmp_path: Path) -> None:
    """An L2 reads hidden states: LoRA on a language model's (tied) lm_head would never train and made
    PEFT store the whole embedding matrix with the adapters. Adapters saved that way still load."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from modelfab.tune.api import load_base
    from modelfab.tune.methods import lora_targets
    from modelfab.zoo.registry import register_foundation
    from modelfab.zoo.testing import write_tiny_hf_model

    register_foundation(text_store, "local", name="tiny-llama", path=str(write_tiny_hf_model(tmp_path / "llama", "lm")))
    res = tune(text_store, base="tiny-llama", data="reviews", name="rev-llama-lora",
               cfg=TuneConfig(method="lora", epochs=1, batch_size=8))
    tensors = text_store.artifacts.get_tensors(res.model.weights_digest or "")
    delta = [k for k in tensors if k.startswith("delta.")]
    assert delta and all("lora_" in k for k in delta), delta
    assert not [k for k in delta if "lm_head" in k or "embed_tokens" in k]
    probs = load_scenario(text_store, res.model.id).predict_proba(["good product", "bad review"])
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    # the old layout: lm_head among the targets, so PEFT also saved the tied embedding matrix
    old_bb, _ = load_base(text_store, "tiny-llama")
    targets = [*lora_targets(old_bb.module), "lm_head"]
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=targets), old_bb.module)
    old = {k: v.clone() for k, v in get_peft_model_state_dict(old_bb.module).items()}
    assert any(k.startswith("lm_head.lora_") for k in old) and any("base_layer" in k or "embed" in k for k in old)
    fresh, _ = load_base(text_store, "tiny-llama")
    METHODS.get("lora").apply(fresh.module, TuneConfig(method="lora"), old)  # no unexpected keys


def test_prior_fits_reuse_patch_vectors_inside_a_reuse_block(
    image_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside reuse_patch_vectors (what --auto runs under), a second fit of the same prior does no
    backbone pass, and gives the same prior as a fit from scratch; outside, each fit computes its own."""
    from modelfab.data import import_image_folder
    from modelfab.data.tasks import TaskView
    from modelfab.tune import prior as prior_mod

    task = TaskView(type="binary", classes=["ok", "ng"], positive="ng")
    import_image_folder(image_store, write_blobs(tmp_path / "b", seed=2), "blobs-reuse",
                        tasks={"defect": task.model_dump()})
    passes: list[str] = []
    real = prior_mod._compute_vectors

    def counted(*args: object, **kwargs: object) -> object:
        passes.append(str(args[3]))  # what: "unlabeled pool (...)" / "validation images"
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prior_mod, "_compute_vectors", counted)

    def fit(name: str, hidden: int) -> dict[str, torch.Tensor]:
        cfg = TuneConfig(prior="gaussian", prior_dim=16, head="mlp", hidden=hidden)
        res = tune(image_store, base="lite0-64", data="blobs-reuse", name=name, cfg=cfg)
        tensors = image_store.artifacts.get_tensors(res.model.weights_digest or "")
        return {k: v for k, v in tensors.items() if k.startswith("prior.") and k != "prior.fusion"}

    alone = fit("reuse-alone", 64)
    assert len(passes) == 2  # pool + validation
    with prior_mod.reuse_patch_vectors():
        first = fit("reuse-a", 64)
        second = fit("reuse-b", 128)  # another head, the same prior inputs
    assert len(passes) == 4, passes  # the second fit inside the block reused both sets
    for got in (first, second):
        assert got.keys() == alone.keys()
        for k in alone:
            torch.testing.assert_close(got[k], alone[k], rtol=0, atol=0)
    fit("reuse-after", 64)
    assert len(passes) == 6  # the block's vectors are gone once it ends


def test_auto_trains_each_optuna_setting_once(tmp_path: Path) -> None:
    """TPE repeats categorical choices (a probe's MLP width has 4): a repeat reuses the first score
    instead of training and recording the same model again."""
    import json

    from modelfab.tune.auto import auto_tune

    store = tiny_text_store(tmp_path / "home", tmp_path)  # no history: probe-linear ranks first
    res = auto_tune(store, base="tiny-bert", data="reviews", name="auto-once", cfg=TuneConfig(), top=1,
                    optuna_trials=8, budget_s=600)
    assert res.trials[0].recipe == "probe-linear"
    refinements = [json.dumps(t.overrides, sort_keys=True) for t in res.trials[1:]]
    assert refinements and len(refinements) == len(set(refinements)) <= 4  # 8 trials, 4 distinct widths
    assert res.best.score == max(t.score for t in res.trials)


def test_an_l2_is_not_a_base(text_store: Store) -> None:
    """tune and adapt start from an L0 or L1: an L2 as base is refused by name, before any work."""
    from modelfab.adapt.api import adapt_model
    from modelfab.adapt.config import AdaptConfig

    tune(text_store, base="tiny-bert", data="reviews", name="l2-src", cfg=TuneConfig())
    before = len(list_models(text_store))
    with pytest.raises(ConfigError, match=r"^base: 'l2-src' is an L2 model \(task text-classification\); start from"):
        tune(text_store, base="l2-src", data="reviews", name="l2-of-l2", cfg=TuneConfig())
    with pytest.raises(ConfigError, match="start from an L0 or L1"):
        adapt_model(text_store, "l2-src", "reviews", "l1-of-l2", AdaptConfig(objective="simcse", steps=1))
    assert len(list_models(text_store)) == before
