"""The anomaly prior: the same distance as the screening scorer, the fused logits, the unlabeled pool."""

from __future__ import annotations

import torch

from modelfab.screen.features import join_maps
from modelfab.screen.gaussian import GaussianConfig, GaussianScorer
from modelfab.store.datasets import ItemRow
from modelfab.tune.prior import AnomalyPrior, pool_rows


def _maps(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 6, 8, 8, generator=gen), "b": torch.randn(n, 10, 4, 4, generator=gen)}


def test_prior_anomaly_equals_the_screening_gaussian() -> None:
    prior = AnomalyPrior(["a", "b"], 3, positive=1, channels=16, dim=16, locations=64)
    prior.proj.copy_(torch.eye(16))
    train = join_maps(_maps(40, 0), ["a", "b"], 3)  # (40, 16, 8, 8)
    scorer = GaussianScorer(GaussianConfig(layers=["a", "b"], proj_dim=None, shrinkage=0.2))
    scorer.fit([train])
    assert scorer.mean is not None and scorer.inv_cov is not None
    prior.mean, prior.inv_cov = scorer.mean.clone(), scorer.inv_cov.clone()
    test = _maps(5, 1)
    expected = scorer.score(join_maps(test, ["a", "b"], 3)).scores
    assert torch.allclose(prior.anomaly(test), expected, rtol=1e-4, atol=1e-4)


def test_fused_logits_give_sigmoid_of_the_mix_to_the_positive_class() -> None:
    for positive in (0, 1):
        prior = AnomalyPrior(["a"], 1, positive=positive, channels=6, dim=6, locations=64)
        prior.fusion.copy_(torch.tensor([0.3, 0.5, 2.0, 1.0, 4.0]))
        margin, anomaly = torch.tensor([-1.0, 0.0, 3.0]), torch.tensor([1.0, 9.0, 5.0])
        s = 0.3 * (margin - 0.5) / 2.0 + 0.7 * (anomaly - 1.0) / 4.0
        probs = torch.softmax(prior.logits(prior.fuse(margin, anomaly)), dim=1)
        assert torch.allclose(probs[:, positive], torch.sigmoid(s), atol=1e-6)
        assert torch.allclose(probs.sum(1), torch.ones(3))


def _row(key: str, split: str | None) -> ItemRow:
    return ItemRow(key, key * 8, split, {}, {})


def test_pool_is_train_and_unsplit_items_capped_by_a_seeded_draw() -> None:
    rows = [_row(f"k{i:02d}", s) for i, s in enumerate(["train", None, "val", "test", "calibration"] * 6)]
    pool = pool_rows(rows, 100, seed=0)
    assert {r.split for r in pool} == {"train", None} and len(pool) == 12
    capped = pool_rows(rows, 5, seed=0)
    assert len(capped) == 5 and capped == pool_rows(rows, 5, seed=0)
    assert {r.key for r in capped} != {r.key for r in pool_rows(rows, 5, seed=1)}
