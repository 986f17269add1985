"""compute_metrics against scikit-learn on random data, plus input validation and edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from modelfab.core.errors import ConfigError, DataError
from modelfab.evaluate import MetricsResult, choose_threshold_for_precision, compute_metrics


def _probs(seed: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.2  # informative but imperfect
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    y[:c] = np.arange(c)  # every class present
    return y, p


def _check_classification(res: MetricsResult, y: np.ndarray, pred: np.ndarray, c: int) -> None:
    labels = list(range(c))
    assert res.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    np.testing.assert_array_equal(np.array(res.confusion), skm.confusion_matrix(y, pred, labels=labels))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose([m.precision for m in res.per_class], p)
    np.testing.assert_allclose([m.recall for m in res.per_class], r)
    np.testing.assert_allclose([m.f1 for m in res.per_class], f)
    assert [m.support for m in res.per_class] == s.tolist()
    assert res.macro_f1 == pytest.approx(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert res.weighted_f1 == pytest.approx(
        skm.f1_score(y, pred, labels=labels, average="weighted", zero_division=0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [3, 5])
def test_multiclass_equals_sklearn(seed: int, c: int) -> None:
    y, p = _probs(seed, 300, c)
    names = [f"c{i}" for i in range(c)]
    res = compute_metrics(y, p, names)
    assert res.task == "multiclass" and res.decision == "argmax"
    _check_classification(res, y, p.argmax(axis=1), c)
    assert res.auroc == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    for k, m in enumerate(res.per_class):
        assert m.auroc == pytest.approx(skm.roc_auc_score(y == k, p[:, k]), abs=1e-12)
        assert m.ap == pytest.approx(skm.average_precision_score(y == k, p[:, k]), abs=1e-12)
    assert set(res.roc) == set(names)
    json.dumps(res.to_dict(), allow_nan=False)


@pytest.mark.parametrize("seed", range(4))
def test_binary_equals_sklearn_with_threshold(seed: int) -> None:
    y, p = _probs(seed, 400, 2)
    thr = 0.62
    res = compute_metrics(y, p, ["ok", "defect"], threshold=thr)
    pred = (p[:, 1] >= thr).astype(int)
    _check_classification(res, y, pred, 2)
    assert res.positive == "defect"
    assert res.auroc == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-12)
    assert res.ap == pytest.approx(skm.average_precision_score(y, p[:, 1]), abs=1e-12)
    op = res.operating_point
    assert op is not None
    assert op.precision == pytest.approx(skm.precision_score(y, pred))
    assert op.recall == pytest.approx(skm.recall_score(y, pred))
    assert op.f1 == pytest.approx(skm.f1_score(y, pred))
    assert (op.tp + op.fn, op.fp + op.tn) == (int(y.sum()), int((1 - y).sum()))
    assert res.summary()["recall@thr"] == op.recall


def test_binary_positive_class_by_name_flips_scores() -> None:
    y, p = _probs(7, 200, 2)
    res = compute_metrics(y, p, ["defect", "ok"], positive="defect")
    assert res.auroc == pytest.approx(skm.roc_auc_score(y == 0, p[:, 0]))
    assert list(res.roc) == ["defect"]
    # 1-D scores are read as P(class 1)
    res1 = compute_metrics(y, p[:, 1], ["ok", "defect"])
    assert res1.auroc == pytest.approx(skm.roc_auc_score(y, p[:, 1]))


def test_recall_at_precision_uses_the_validation_threshold() -> None:
    y, p = _probs(11, 1000, 2)
    val, test = slice(0, 500), slice(500, 1000)
    t = choose_threshold_for_precision(y[val], p[val, 1], 0.9)
    res = compute_metrics(y[test], p[test], ["ok", "defect"], precision_thresholds={0.9: t})
    (rap,) = res.recall_at_precision
    pred = p[test, 1] >= t
    assert rap.threshold == t
    assert rap.achieved.recall == pytest.approx(skm.recall_score(y[test], pred))
    assert rap.achieved.precision == pytest.approx(skm.precision_score(y[test], pred))
    assert rap.oracle_recall is not None and rap.oracle_recall >= 0
    assert res.summary()["recall@p0.9"] == rap.achieved.recall


def test_bootstrap_ci_is_seeded_and_brackets_auroc() -> None:
    y, p = _probs(3, 300, 2)
    a = compute_metrics(y, p, ["a", "b"], bootstrap=200, seed=5)
    b = compute_metrics(y, p, ["a", "b"], bootstrap=200, seed=5)
    assert a.auroc_ci == b.auroc_ci and a.auroc_ci is not None and a.auroc is not None
    assert a.auroc_ci[0] <= a.auroc <= a.auroc_ci[1]
    c = compute_metrics(y, p, ["a", "b"], bootstrap=200, seed=6)
    assert c.auroc_ci != a.auroc_ci


def test_single_class_present_gives_none_auroc_with_note() -> None:
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    res = compute_metrics([0, 0, 0], p, ["ok", "defect"], threshold=0.5)
    assert res.auroc is None and res.ap is None and res.roc == {}
    assert any("AUROC" in n and "undefined" in n for n in res.notes)
    assert res.to_dict()["auroc"] is None
    json.dumps(res.to_dict(), allow_nan=False)
    # multi-class with one class absent: macro over the defined classes, with a note
    y, p3 = _probs(0, 60, 3)
    y[y == 2] = 0
    res3 = compute_metrics(y, p3, ["a", "b", "c"])
    assert res3.per_class[2].auroc is None
    assert res3.auroc == pytest.approx(np.mean([m.auroc for m in res3.per_class[:2]]))
    assert any("'c'" in n for n in res3.notes)


@pytest.mark.parametrize(
    ("y", "p", "names", "kwargs", "err", "match"),
    [
        ([0, 1], [[0.5, 0.5]], ["a", "b"], {}, DataError, "2 samples but probs has 1 rows"),
        ([0, 1], [[0.5, 0.3, 0.2]] * 2, ["a", "b"], {}, DataError, "3 columns"),
        ([0, 1], [[0.5, np.nan], [0.5, 0.5]], ["a", "b"], {}, DataError, "NaN"),
        ([0, 1], [[0.5, 0.4], [0.5, 0.5]], ["a", "b"], {}, DataError, "sum to 1"),
        ([0, 1], [[2.0, -1.0], [0.5, 0.5]], ["a", "b"], {}, DataError, "logits"),
        ([0, 3], [[0.5, 0.5]] * 2, ["a", "b"], {}, DataError, "outside"),
        ([0.5, 1], [[0.5, 0.5]] * 2, ["a", "b"], {}, DataError, "integer"),
        ([], np.zeros((0, 2)), ["a", "b"], {}, DataError, "no samples"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a"], {}, ConfigError, "at least 2"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a", "a"], {}, ConfigError, "duplicates"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a", "b"], {"positive": "z"}, ConfigError, "not one of"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a", "b"], {"threshold": 1.5}, ConfigError, "threshold"),
        ([0, 1], [[0.3, 0.3, 0.4]] * 2, ["a", "b", "c"], {"threshold": 0.5}, ConfigError, "binary"),
        ([0, 1], [[0.3, 0.3, 0.4]] * 2, ["a", "b", "c"], {"positive": "a"}, ConfigError, "binary"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a", "b"], {"precision_thresholds": {1.2: 0.5}}, ConfigError, "precision"),
        ([0, 1], [[0.5, 0.5]] * 2, ["a", "b"], {"n_bins": 0}, ConfigError, "n_bins"),
    ],
)
def test_bad_inputs_raise_clear_errors(
    y: list[float], p: object, names: list[str], kwargs: dict[str, object], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        compute_metrics(y, p, names, **kwargs)  # type: ignore[arg-type]


def test_float_labels_and_bool_labels_are_accepted() -> None:
    p = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert compute_metrics(np.array([0.0, 1.0]), p, ["a", "b"]).accuracy == 1.0
    assert compute_metrics(np.array([False, True]), p, ["a", "b"]).accuracy == 1.0


def test_no_predictions_for_a_class_sets_precision_zero_with_note() -> None:
    p = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.8, 0.0]])
    res = compute_metrics([0, 1, 2], p, ["a", "b", "c"])
    assert res.per_class[2].precision == 0.0 and res.per_class[2].recall == 0.0
    assert any("no sample predicted as 'c'" in n for n in res.notes)
