"""The runtime seam: planning refuses what cannot be served; LoRA/probe L2s share one base copy and
predict exactly what each L2 predicts alone."""

from __future__ import annotations

import numpy as np
import pytest

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.serve.runtime import load_models, plan_model
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, load_scenario, tune
from modelfab.tune.data import item_inputs
from tests.tune_fixtures import tiny_image_store


@pytest.fixture(scope="module")
def l2s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[str]]:
    tmp = tmp_path_factory.mktemp("serve-rt")
    st = tiny_image_store(tmp / "home", tmp)
    ids = []
    for i, (method, rank) in enumerate([("lora", 4), ("lora", 2), ("probe", 4)]):
        cfg = TuneConfig(method=method, lora_rank=rank, epochs=1, batch_size=16, seed=i, augment="none")
        ids.append(tune(st, base="lite0-64", data="blobs", name=f"m{i}", cfg=cfg).model.id)
    return st, ids


def test_plan_refuses_what_cannot_be_served(l2s: tuple[Store, list[str]]) -> None:
    st, ids = l2s
    with pytest.raises(ConfigError, match="cannot serve lite0-64"):
        plan_model(st, "lite0-64")  # a backbone has no head
    with pytest.raises(NotFoundError):
        plan_model(st, "nope")
    with pytest.raises(ConfigError, match="modelfab export"):
        plan_model(st, ids[0], "onnxruntime")  # no exported child yet
    plan = plan_model(st, "m0")
    assert plan.runtime == "torch" and plan.method == "lora" and plan.model.id == ids[0]


def test_shared_base_matches_each_model_alone(l2s: tuple[Store, list[str]]) -> None:
    st, ids = l2s
    rows = [r for r in st.version_items("blobs") if r.split in ("val", "test")][:6]
    images = item_inputs(st, rows, "image")
    loaded = load_models(st, [plan_model(st, i) for i in ids])
    bases = {lm.shared_base for lm in loaded}
    assert len(bases) == 1 and None not in bases  # three L2s, one backbone copy
    outs = []
    for lm, mid in zip(loaded, ids, strict=True):
        got = lm.infer([lm.prepare(np.asarray(img)) for img in images])  # (N, C)
        want = load_scenario(st, mid).predict_proba(images).numpy()
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5), (mid, np.abs(got - want).max())
        outs.append(got)
    assert not np.allclose(outs[0], outs[1])  # adapters really switch
    again = loaded[0].infer([loaded[0].prepare(np.asarray(images[0]))])
    assert np.allclose(again, outs[0][:1], atol=1e-5)  # switching back restores the first adapter


def test_single_model_is_not_shared(l2s: tuple[Store, list[str]]) -> None:
    st, ids = l2s
    (alone,) = load_models(st, [plan_model(st, ids[0])])
    shared = load_models(st, [plan_model(st, i) for i in ids[:2]])
    assert alone.shared_base is None and shared[0].shared_base is not None
    assert 0 < shared[0].own_bytes < alone.own_bytes / 10  # adapters + head vs a whole network
    alone.warmup()
    rows = [r for r in st.version_items("blobs") if r.split == "val"][:3]
    images = item_inputs(st, rows, "image")
    got = alone.infer([alone.prepare(np.asarray(img)) for img in images])
    assert np.allclose(got, load_scenario(st, ids[0]).predict_proba(images).numpy(), atol=1e-5)


def test_prior_model_is_served_whole_beside_shared_ones(l2s: tuple[Store, list[str]]) -> None:
    """An L2 with an anomaly prior needs the patch maps, not just the shared base's embedding."""
    st, ids = l2s
    cfg = TuneConfig(prior="gaussian", prior_dim=8, prior_weight=0.5)
    pid = tune(st, base="lite0-64", data="blobs", name="m-prior", cfg=cfg).model.id
    loaded = load_models(st, [plan_model(st, i) for i in (ids[1], ids[2], pid)])
    assert loaded[0].shared_base is not None and loaded[1].shared_base is not None and loaded[2].shared_base is None
    rows = [r for r in st.version_items("blobs") if r.split == "test"][:4]
    images = item_inputs(st, rows, "image")
    got = loaded[2].infer([loaded[2].prepare(np.asarray(img)) for img in images])
    want = load_scenario(st, pid).predict_proba(images).numpy()
    assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()
