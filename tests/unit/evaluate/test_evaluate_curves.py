"""Ranking curves, AUROC, AP and threshold selection against scikit-learn and by their guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from modelfab.core.errors import ConfigError, DataError
from modelfab.evaluate import (
    auroc,
    average_precision,
    choose_threshold_for_precision,
    choose_threshold_for_recall,
    pr_curve,
    recall_at_precision_oracle,
    roc_curve,
)


def _data(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + rng.random(n) * 0.65, 0.0, 1.0)
    if ties:
        s = np.round(s, 1)  # many equal scores
    if y.min() == y.max():
        y[0] = 1 - y[0]
    return y, s


CASES = [(seed, n, ties) for seed in range(6) for n, ties in [(7, False), (50, True), (400, False), (400, True)]]


@pytest.mark.parametrize(("seed", "n", "ties"), CASES)
def test_auroc_ap_and_curves_equal_sklearn(seed: int, n: int, ties: bool) -> None:
    y, s = _data(seed, n, ties)
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    for drop in (True, False):
        fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=drop)
        c = roc_curve(y, s, drop_intermediate=drop)
        np.testing.assert_allclose(c.x, fpr)
        np.testing.assert_allclose(c.y, tpr)
        np.testing.assert_array_equal(c.thresholds, thr)
    p, r, t = skm.precision_recall_curve(y, s)
    c = pr_curve(y, s)
    np.testing.assert_allclose(c.y, p)
    np.testing.assert_allclose(c.x, r)
    np.testing.assert_array_equal(c.thresholds, t)


def test_curve_to_dict_is_json_safe_and_roundtrips() -> None:
    y, s = _data(0, 30, False)
    c = roc_curve(y, s)
    d = c.to_dict()
    assert d["thresholds"][0] is None  # +inf
    assert type(c).from_dict(d) == c


def _recall(y: np.ndarray, s: np.ndarray, t: float) -> float:
    return float(np.sum((s >= t) & (y == 1)) / np.sum(y == 1))


def _precision(y: np.ndarray, s: np.ndarray, t: float) -> float:
    pred = s >= t
    return float(np.sum(pred & (y == 1)) / max(1, np.sum(pred)))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 1.0])
def test_threshold_for_recall_guarantee_and_optimality(seed: int, target: float) -> None:
    y, s = _data(seed, 120, ties=seed % 2 == 0)
    t = choose_threshold_for_recall(y, s, target)
    assert t in set(s.tolist())  # one of the observed scores
    assert _recall(y, s, t) >= target
    higher = np.unique(s[s > t])
    if higher.size:  # the next higher observed score no longer reaches the target
        assert _recall(y, s, float(higher.min())) < target
    assert choose_threshold_for_recall(y, s, target) == t  # deterministic


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("target", [0.6, 0.8, 0.9])
def test_threshold_for_precision_guarantee_and_optimality(seed: int, target: float) -> None:
    y, s = _data(seed, 120, ties=seed % 2 == 1)
    t = choose_threshold_for_precision(y, s, target, strict=False)
    if math.isinf(t):
        assert all(_precision(y, s, float(v)) < target for v in np.unique(s))
        return
    assert _precision(y, s, t) >= target
    best = max(_recall(y, s, float(v)) for v in np.unique(s) if _precision(y, s, float(v)) >= target)
    assert _recall(y, s, t) == best
    assert recall_at_precision_oracle(y, s, target) == best


def test_threshold_exact_at_float_boundary() -> None:
    # precision exactly 0.9 (9 of 10) must count as reaching 0.9 despite 0.9 * 10 > 9 in floats
    y = np.array([1] * 9 + [0] + [1, 0, 0, 0, 0])
    s = np.array([0.9] * 10 + [0.1] * 5)
    assert choose_threshold_for_precision(y, s, 0.9) == 0.9
    # recall exactly 0.9 (9 of 10 positives above 0.5)
    y2 = np.array([1] * 10 + [0] * 3)
    s2 = np.array([0.8] * 9 + [0.2] + [0.1] * 3)
    assert choose_threshold_for_recall(y2, s2, 0.9) == 0.8


def test_ties_are_never_split() -> None:
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.7, 0.7, 0.7, 0.2, 0.1])
    # recall 0.5 is impossible without splitting the tie at 0.7: all three go together (recall 1)
    assert choose_threshold_for_recall(y, s, 0.5) == 0.7
    with pytest.raises(DataError, match=r"no threshold reaches precision 0\.9"):
        choose_threshold_for_precision(y, s, 0.9)
    assert choose_threshold_for_precision(y, s, 0.9, strict=False) == math.inf


def test_errors() -> None:
    with pytest.raises(DataError, match="only negative"):
        auroc(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(DataError, match="only positive"):
        roc_curve(np.ones(5), np.linspace(0, 1, 5))
    with pytest.raises(DataError, match="no positive"):
        average_precision(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(DataError, match="equal length"):
        auroc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match="NaN"):
        auroc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(DataError, match="0/1"):
        auroc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ConfigError, match="target_recall"):
        choose_threshold_for_recall(np.array([0, 1]), np.array([0.1, 0.2]), 1.5)
    with pytest.raises(DataError, match="no positive"):
        choose_threshold_for_recall(np.array([0, 0]), np.array([0.1, 0.2]), 0.9)
