"""Every active-learning selector passes the same suite: exactly ``budget`` distinct pool indices,
deterministic for a seed, a clear error when the budget exceeds the pool, excluded items never
chosen, and the same choice after its config is saved and reloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelfab.core.catalog import contract_params
from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.screen.select import SELECTORS, Pool, build_selector
from modelfab.screen.uncertainty import uncertainty_scores


def make_pool(n: int = 60, d: int = 8, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)  # (N, D)
    logits = rng.normal(size=(n, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # (N, 3)
    labeled = rng.normal(size=(5, d)).astype(np.float32)  # (M, D)
    return Pool(x, probs, labeled)


@pytest.mark.parametrize("entry", contract_params(SELECTORS))
def test_selector_contract(entry) -> None:  # type: ignore[no-untyped-def]
    pool = make_pool()
    sel = build_selector(entry.name)
    a = sel.select(pool, 10, seed=3)
    assert a.indices.shape == (10,) and a.scores.shape == (10,)
    assert len(set(a.indices.tolist())) == 10 and all(0 <= i < 60 for i in a.indices.tolist())
    assert np.array_equal(a.indices, sel.select(pool, 10, seed=3).indices)
    # the whole pool can be taken, one more cannot
    assert sorted(sel.select(pool, 60, seed=0).indices.tolist()) == list(range(60))
    with pytest.raises(DataError, match="budget 61 exceeds the 60 unlabeled"):
        sel.select(pool, 61)
    with pytest.raises(ConfigError, match="budget"):
        sel.select(pool, 0)
    # excluded items are never chosen, and they shrink the pool
    exclude = np.zeros(60, dtype=bool)
    exclude[::2] = True
    masked = Pool(pool.embeddings, pool.probs, pool.labeled, exclude)
    picked = sel.select(masked, 30, seed=1).indices
    assert not exclude[picked].any() and len(set(picked.tolist())) == 30
    with pytest.raises(DataError):
        sel.select(masked, 31)
    # config round trip (as stored in a Run): the same selector, the same choice
    saved = json.loads(json.dumps(sel.cfg.model_dump()))
    again = build_selector(entry.name, saved)
    assert np.array_equal(again.select(pool, 10, seed=3).indices, a.indices)
    with pytest.raises(Exception, match="extra"):
        build_selector(entry.name, {"no_such_field": 1})
    if sel.needs_probabilities:
        with pytest.raises(ConfigError, match="needs class probabilities"):
            sel.select(Pool(pool.embeddings, None, pool.labeled), 5)


def test_unknown_selector_lists_known() -> None:
    with pytest.raises(NotFoundError, match="badge, diversity, hybrid, random, uncertainty"):
        build_selector("nope")


def test_random_depends_on_seed() -> None:
    pool = make_pool()
    sel = build_selector("random")
    assert not np.array_equal(sel.select(pool, 10, seed=0).indices, sel.select(pool, 10, seed=1).indices)


@pytest.mark.parametrize("measure", ["entropy", "margin", "least-confidence"])
def test_uncertainty_picks_most_uncertain(measure: str) -> None:
    n = 40
    probs = np.tile([0.97, 0.02, 0.01], (n, 1))  # confident everywhere ...
    unsure = [3, 17, 29]
    probs[3] = [0.34, 0.33, 0.33]  # ... except three items, least sure first
    probs[17] = [0.45, 0.44, 0.11]
    probs[29] = [0.6, 0.3, 0.1]
    pool = Pool(np.random.default_rng(0).normal(size=(n, 4)), probs)
    got = build_selector("uncertainty", {"measure": measure}).select(pool, 3).indices.tolist()
    assert sorted(got) == unsure
    assert got[0] == 3  # the flattest distribution is the most uncertain under every measure
    scores = uncertainty_scores(probs, measure)
    assert scores[3] > scores[29] > scores[0]


def test_uncertainty_margin_vs_entropy_differ() -> None:
    # margin looks only at the top two classes; entropy at all of them
    probs = np.array([[0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])
    assert uncertainty_scores(probs, "margin")[0] > uncertainty_scores(probs, "margin")[1]
    assert uncertainty_scores(probs, "entropy")[0] < uncertainty_scores(probs, "entropy")[1]


def clusters(centers: list[list[float]], per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.asarray(c) + 0.05 * rng.normal(size=(per, 2)) for c in centers])  # (K * per, 2)
    return x.astype(np.float32), np.repeat(np.arange(len(centers)), per)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_diversity_covers_far_clusters(metric: str) -> None:
    centers = [[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -10.0], [7.0, 7.0]]
    x, which = clusters(centers, 30)
    # one big dense cluster holds most items: random sampling over-draws it, k-center must not
    big = np.asarray([10.0, 0.0]) + 0.05 * np.random.default_rng(1).normal(size=(300, 2))
    x = np.concatenate([x, big.astype(np.float32)])
    which = np.concatenate([which, np.zeros(300, dtype=int)])
    sel = build_selector("diversity", {"metric": metric})
    picked = sel.select(Pool(x), 5, seed=0).indices
    assert sorted(set(which[picked].tolist())) == [0, 1, 2, 3, 4]
    # seeded from the labeled set: clusters already labeled are covered, the rest get the picks
    labeled = np.asarray(centers[:3], dtype=np.float32)
    picked = sel.select(Pool(x, labeled=labeled), 2, seed=0).indices
    assert sorted(which[picked].tolist()) == [3, 4]


def test_hybrid_is_uncertain_and_diverse() -> None:
    # two tight clusters of uncertain items (20 each) and confident items elsewhere: pure
    # uncertainty fills the budget from the flattest cluster, hybrid spreads over both
    x, which = clusters([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]], 20)
    probs = np.tile([0.99, 0.01], (60, 1))
    probs[which == 0] = [0.5, 0.5]
    probs[which == 1] = [0.6, 0.4]
    pool = Pool(x, probs)
    unc = build_selector("uncertainty").select(pool, 4).indices
    hyb = build_selector("hybrid", {"candidates": 10}).select(pool, 4).indices
    assert set(which[unc].tolist()) == {0}
    assert set(which[hyb].tolist()) == {0, 1}  # never the confident cluster 2
