"""Label checks on constructed embeddings: planted label errors, outliers and duplicates are found."""

from __future__ import annotations

import numpy as np
import pytest

from modelfab.core.errors import DataError
from modelfab.screen.quality import QualityConfig, check_quality


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[int], int, int]:
    """Two separable classes (60 + 60 items, 16-D), 4 flipped labels, 1 far outlier, 1 near copy."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(16)
    mu[:4] = 2.5
    x = np.concatenate([rng.normal(size=(60, 16)) + mu, rng.normal(size=(60, 16)) - mu])  # (120, 16)
    y = np.repeat([0, 1], 60)
    flipped = [3, 20, 75, 101]
    y[flipped] = 1 - y[flipped]
    outlier = np.full((1, 16), 25.0)
    near = x[50:51] + 1e-3 * rng.normal(size=(1, 16))  # same image re-encoded: a new hash, near-equal embedding
    x = np.concatenate([x, outlier, near]).astype(np.float32)
    y = np.concatenate([y, [-1, 0]])  # the outlier is unlabeled
    hashes = [f"h{i}" for i in range(len(x))]
    hashes[7] = hashes[8]  # an exact duplicate pair (same content hash)
    return x, y, hashes, flipped, 120, 121


def test_finds_planted_label_errors_outlier_and_duplicates() -> None:
    x, y, hashes, flipped, outlier, near = planted()
    rep = check_quality(hashes, x, y, 2, QualityConfig())
    assert rep.items == 122 and rep.labeled == 121
    found = {i.index for i in rep.label_issues}
    assert set(flipped) <= found, (flipped, found)
    assert len(found - set(flipped)) <= 2  # few false alarms on clean, separable data
    for issue in rep.label_issues:
        if issue.index in flipped:
            assert issue.suggested != issue.given and issue.quality < 0.5
    assert rep.outliers and rep.outliers[0].index == outlier
    assert outlier not in found  # unlabeled items are not label-checked
    kinds = {(g.kind, tuple(g.indices)) for g in rep.duplicates}
    assert ("exact", (7, 8)) in kinds
    assert ("near", (50, near)) in kinds
    assert all(g.similarity >= 0.97 for g in rep.duplicates)


def test_clean_data_has_no_label_issues() -> None:
    rng = np.random.default_rng(1)
    mu = np.zeros(8)
    mu[0] = 6.0
    x = np.concatenate([rng.normal(size=(40, 8)) + mu, rng.normal(size=(40, 8)) - mu]).astype(np.float32)
    y = np.repeat([0, 1], 40)
    rep = check_quality([f"h{i}" for i in range(80)], x, y, 2)
    assert rep.label_issues == [] and [g for g in rep.duplicates if g.kind == "exact"] == []


def test_without_embeddings_only_exact_duplicates() -> None:
    rep = check_quality(["a", "b", "a", "c", "b"], None, None, 0)
    assert [g.indices for g in rep.duplicates] == [[0, 2], [1, 4]]
    assert rep.label_issues == [] and rep.outliers == [] and "exact duplicates" in rep.notes[0]


def test_too_few_labels_per_class_is_a_note() -> None:
    x, y, hashes, *_ = planted()
    y = np.where(np.arange(len(y)) < 2, y, -1)  # two labeled items, one per class at most
    y[:2] = [0, 1]
    rep = check_quality(hashes, x, y, 2)
    assert rep.label_issues == [] and any("at least 2 labeled items per class" in n for n in rep.notes)


def test_empty_is_an_error() -> None:
    with pytest.raises(DataError, match="no items"):
        check_quality([], None, None, 0)
