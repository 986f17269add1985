"""Clopper-Pearson recall bounds and the calibrated screening threshold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import beta

from modelfab.core.errors import ConfigError, DataError
from modelfab.screen.calibrate import calibrate_threshold, defects_needed, recall_lower_bound


def test_defects_needed_facts() -> None:
    assert defects_needed(0.95) == 59
    assert defects_needed(0.99) == 299
    assert defects_needed(0.90) == 29
    # the facts behind them: 59 / 299 with no miss reach the target, one fewer does not
    assert recall_lower_bound(59, 59) >= 0.95 > recall_lower_bound(58, 58)
    assert recall_lower_bound(299, 299) >= 0.99 > recall_lower_bound(298, 298)


@pytest.mark.parametrize(("k", "n"), [(1, 10), (50, 59), (95, 100), (107, 107), (3, 3)])
def test_bound_matches_beta_quantile(k: int, n: int) -> None:
    assert recall_lower_bound(k, n, 0.95) == pytest.approx(beta.ppf(0.05, k, n - k + 1), rel=1e-12)
    assert recall_lower_bound(n, n, 0.95) == pytest.approx(0.05 ** (1 / n), rel=1e-9)  # closed form, no miss
    assert recall_lower_bound(0, n) == 0.0


def test_bound_is_monotone() -> None:
    n = 120
    bounds = [recall_lower_bound(k, n) for k in range(n + 1)]
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert all(recall_lower_bound(k, n, 0.99) < recall_lower_bound(k, n, 0.9) for k in range(1, n + 1))
    assert all(recall_lower_bound(k, k) < recall_lower_bound(k + 1, k + 1) for k in range(1, 50))
    assert all(b <= k / n + 1e-12 for k, b in enumerate(bounds))  # a lower bound never exceeds the estimate


def test_threshold_is_highest_meeting_the_bound() -> None:
    rng = np.random.default_rng(0)
    defects = rng.normal(3.0, 1.0, 200)
    normals = rng.normal(0.0, 1.0, 500)
    cal = calibrate_threshold(defects, 0.95, 0.95, normals)
    assert cal.recall_bound >= 0.95 and cal.defects == 200
    assert cal.detected == int((defects >= cal.threshold).sum())
    # the next higher defect score would miss one more defect and break the bound
    higher = np.sort(defects[defects > cal.threshold])[0]
    assert recall_lower_bound(int((defects >= higher).sum()), 200) < 0.95
    assert cal.normals_filtered == pytest.approx(float((normals < cal.threshold).mean()))
    assert 0.5 < cal.normals_filtered < 1.0


def test_zero_miss_at_the_minimum_count_uses_the_lowest_defect() -> None:
    defects = np.linspace(1.0, 2.0, 59)
    cal = calibrate_threshold(defects, 0.95)
    assert cal.threshold == pytest.approx(1.0) and cal.detected == 59 and cal.observed_recall == 1.0


def test_ties_at_the_threshold_go_to_humans() -> None:
    defects = np.array([5.0] * 40 + [1.0] * 40)
    cal = calibrate_threshold(defects, 0.5)
    assert cal.threshold == 5.0 or cal.detected == 80
    assert cal.detected == int((defects >= cal.threshold).sum())


def test_refusals() -> None:
    with pytest.raises(DataError, match="59 are needed"):
        calibrate_threshold(np.ones(58), 0.95)
    with pytest.raises(DataError, match="299 are needed"):
        calibrate_threshold(np.ones(120), 0.99)
    with pytest.raises(DataError, match="no defects"):
        calibrate_threshold(np.array([]), 0.95)
    with pytest.raises(ConfigError, match="target_recall"):
        calibrate_threshold(np.ones(100), 1.0)
    with pytest.raises(DataError, match="NaN"):
        calibrate_threshold(np.array([np.nan] * 60), 0.95)
