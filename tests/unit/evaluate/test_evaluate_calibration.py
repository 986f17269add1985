"""ECE and reliability bins on constructed inputs with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modelfab.evaluate import calibration


def _binary(conf: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    # class 1 predicted with probability conf (> 0.5); label 1 when correct
    p1 = np.array(conf)
    probs = np.stack([1 - p1, p1], axis=1)
    y = np.array([1 if c else 0 for c in correct])
    return y, probs


def test_perfectly_confident_and_correct_is_zero() -> None:
    y = np.array([0, 1, 2])
    assert calibration(y, np.eye(3)).ece == pytest.approx(0.0)


def test_constant_confidence_known_ece() -> None:
    y, p = _binary([0.8] * 10, [True] * 10)
    cal = calibration(y, p)
    assert cal.ece == pytest.approx(0.2)  # always right at 0.8 confidence
    y, p = _binary([0.8] * 10, [True] * 5 + [False] * 5)
    assert calibration(y, p).ece == pytest.approx(0.3)  # |0.5 - 0.8|


def test_two_bins_weighted_average_and_mce() -> None:
    # 6 samples at 0.9 with 3 correct (gap 0.4), 4 samples at 0.6 all correct (gap 0.4 -> accuracy 1)
    y, p = _binary([0.9] * 6 + [0.6] * 4, [True] * 3 + [False] * 3 + [True] * 4)
    cal = calibration(y, p)
    assert cal.ece == pytest.approx(0.6 * 0.4 + 0.4 * 0.4)
    assert cal.mce == pytest.approx(0.4)
    filled = [b for b in cal.bins if b.count]
    assert [b.count for b in filled] == [4, 6]
    assert filled[0].accuracy == pytest.approx(1.0) and filled[1].confidence == pytest.approx(0.9)


def test_bins_are_equal_width_right_closed_and_count_everything() -> None:
    rng = np.random.default_rng(0)
    c = 4
    logits = rng.normal(size=(500, c)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, c, 500)
    cal = calibration(y, p)
    assert cal.n_bins == 15 and len(cal.bins) == 15
    assert sum(b.count for b in cal.bins) == 500
    np.testing.assert_allclose([b.upper - b.lower for b in cal.bins], 1 / 15)
    # a confidence exactly on an edge (0.6 = 9/15) goes to the bin that ends there
    _, pe = _binary([0.6], [True])
    edge = calibration(np.array([1]), pe)
    assert edge.bins[8].count == 1
    # reference ECE computed the textbook way
    conf, correct = p.max(1), p.argmax(1) == y
    ref = 0.0
    edges = np.linspace(0, 1, 16)
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ref += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert cal.ece == pytest.approx(ref)


def test_brier_score() -> None:
    p = np.array([[0.7, 0.3], [0.4, 0.6]])
    y = np.array([0, 0])
    # (0.09 + 0.09 + 0.36 + 0.36) / 2
    assert calibration(y, p).brier == pytest.approx(0.45)
