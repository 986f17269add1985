"""How good are a backbone's frozen features? Linear-probe and kNN-anomaly AUROC on fixed splits.

Used by ``bench/adapt.py`` to compare an L1 with its L0.  Hyper-parameters (C, k) are chosen on
the validation split; the test split is scored once with the chosen value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

C_GRID = (0.01, 0.1, 1.0, 10.0)
K_GRID = (1, 5, 10)
# two-sided 97.5% Student t quantiles by degrees of freedom (for 95% intervals of small samples)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Split:
    """Features (N, D) and binary labels (N,) (1 = positive / defective)."""

    x: np.ndarray
    y: np.ndarray


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval half-width of a small sample."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return {"mean": float(arr.mean()), "ci95": float("nan"), "n": len(arr)}
    t = _T975.get(len(arr) - 1, 1.96)
    return {"mean": float(arr.mean()), "ci95": float(t * arr.std(ddof=1) / math.sqrt(len(arr))), "n": len(arr)}


def _fit_probe(x: np.ndarray, y: np.ndarray, c: float, mean: np.ndarray, std: np.ndarray) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit((x - mean) / std, y)


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def probe_auroc(train: Split, val: Split, test: Split, scale_from: np.ndarray | None = None) -> dict[str, float]:
    """Logistic regression on standardised features; C picked on val; returns val and test AUROC."""
    ref = train.x if scale_from is None else scale_from
    mean, std = ref.mean(0), ref.std(0) + 1e-6
    best = (-1.0, C_GRID[0])
    for c in C_GRID:
        clf = _fit_probe(train.x, train.y, c, mean, std)
        best = max(best, (_auroc(val.y, clf.decision_function((val.x - mean) / std)), c))  # type: ignore[attr-defined]
    clf = _fit_probe(train.x, train.y, best[1], mean, std)
    test_auc = _auroc(test.y, clf.decision_function((test.x - mean) / std))  # type: ignore[attr-defined]
    return {"val_auroc": best[0], "C": best[1], "test_auroc": test_auc}


def fewshot_probe(train: Split, val: Split, test: Split, shots: int, seeds: Sequence[int]) -> dict[str, object]:
    """``shots`` labeled items per class drawn from train per seed; C picked on val by the seed mean."""
    mean, std = train.x.mean(0), train.x.std(0) + 1e-6  # unlabeled statistics of the whole train split
    draws = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = np.concatenate([rng.choice(np.flatnonzero(train.y == c), shots, replace=False) for c in (0, 1)])
        draws.append(idx)
    best: tuple[float, float] = (-1.0, C_GRID[0])
    for c in C_GRID:
        vals = [_auroc(val.y, _fit_probe(train.x[i], train.y[i], c, mean, std)
                       .decision_function((val.x - mean) / std)) for i in draws]  # type: ignore[attr-defined]
        best = max(best, (float(np.mean(vals)), c))
    tests = [_auroc(test.y, _fit_probe(train.x[i], train.y[i], best[1], mean, std)
                    .decision_function((test.x - mean) / std)) for i in draws]  # type: ignore[attr-defined]
    return {"shots": shots, "C": best[1], "val_auroc": best[0], "test": mean_ci(tests), "per_seed": tests}


def _knn_scores(bank: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    d = 2.0 - 2.0 * query @ bank.T  # squared distance of unit vectors, (Q, B)
    k = min(k, bank.shape[0])
    return np.sqrt(np.clip(np.partition(d, k - 1, axis=1)[:, :k], 0, None)).mean(1)


def knn_anomaly_auroc(train: Split, val: Split, test: Split) -> dict[str, float]:
    """Memory bank = L2-normalised features of the normal (y == 0) train items; score = mean distance
    to the k nearest; k picked on val."""

    def norm(x: np.ndarray) -> np.ndarray:
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

    bank = norm(train.x[train.y == 0])
    best = max((_auroc(val.y, _knn_scores(bank, norm(val.x), k)), k) for k in K_GRID)
    return {"val_auroc": best[0], "k": best[1], "test_auroc": _auroc(test.y, _knn_scores(bank, norm(test.x), best[1]))}
