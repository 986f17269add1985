"""A logistic-regression probe on frozen embeddings: pool probabilities for selectors (when no L2
is given) and out-of-sample probabilities for label checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfab.core.errors import DataError


def make_probe(c: float = 0.01, seed: int = 0) -> Any:
    """Standardise, then L2-regularised logistic regression (class-balanced).

    C = 0.01 was chosen on the ELPV validation split (frozen Lite0, 40 to 1,443 labels; bench/active.py).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
    )


def probe_probabilities(
    x_labeled: np.ndarray, y: np.ndarray, x_pool: np.ndarray, n_classes: int, c: float = 0.01, seed: int = 0
) -> np.ndarray:
    """Fit on (M, D) labeled embeddings with (M,) class indices; (N, n_classes) pool probabilities.

    Classes absent from ``y`` get probability 0.
    """
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"a probe needs labeled items of at least two classes; got {len(present)}")
    probe = make_probe(c, seed).fit(x_labeled, y)
    out = np.zeros((len(x_pool), n_classes))
    out[:, probe.classes_] = probe.predict_proba(x_pool)
    return out


def out_of_sample_probabilities(
    x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, c: float = 0.01, seed: int = 0
) -> np.ndarray:
    """(N, n_classes) probabilities of each item from a probe that never saw it (stratified K-fold)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    smallest = int(counts[counts > 0].min())
    k = min(folds, smallest)
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 labeled items per class; the smallest class has {smallest}")
    out = np.zeros((len(x), n_classes))
    for train, held in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y):
        out[held] = probe_probabilities(x[train], y[train], x[held], n_classes, c, seed)
    return out
