"""Label quality checks on arrays: likely label errors, outliers and (near-)duplicates (cleanlab).

- Label errors: out-of-sample class probabilities from a cross-validated logistic-regression probe on
  frozen embeddings, then confident learning (``cleanlab.filter.find_label_issues``); each flagged
  item carries cleanlab's label-quality score and the class the probe suggests.
- Outliers: cleanlab's kNN out-of-distribution score on the embeddings; an item is flagged with
  Datalab's rule: mean distance to its k neighbours > Q3 + (1/threshold - 1) * IQR.
- Duplicates: identical content hashes (exact), and pairs whose centred embeddings have cosine
  similarity >= ``near_duplicate`` (faiss range search), grouped by connected components.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelfab.core import optional
from modelfab.core.errors import DataError
from modelfab.screen.kcenter import unit_rows
from modelfab.screen.probe import out_of_sample_probabilities

FilterBy = Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"]


class QualityConfig(BaseModel):
    """Settings of ``modelfab data check``."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(default=5, ge=2)
    """Cross-validation folds of the out-of-sample probe (fewer when a class is smaller)."""
    c: float = Field(default=0.01, gt=0)
    """Inverse L2 strength of the logistic-regression probe."""
    filter_by: FilterBy = "prune_by_noise_rate"
    """cleanlab ``find_label_issues`` method."""
    outlier_k: int = Field(default=10, ge=1)
    """Neighbours of the kNN outlier score."""
    outlier_threshold: float = Field(default=0.37037, gt=0, le=1)
    """Datalab's outlier threshold: flag mean kNN distance > Q3 + (1/threshold - 1) * IQR (smaller = fewer)."""
    near_duplicate: float = Field(default=0.97, gt=0, le=1)
    """Cosine similarity (centred embeddings) at or above which two items are near duplicates."""
    seed: int = 0
    """Seed of the cross-validation folds."""


@dataclass
class LabelIssue:
    index: int
    given: int
    suggested: int
    quality: float  # cleanlab self-confidence label quality, lower = more likely wrong


@dataclass
class Outlier:
    index: int
    score: float  # cleanlab OOD score in [0, 1], lower = more atypical
    distance: float  # mean distance to the k nearest neighbours


@dataclass
class DuplicateGroup:
    indices: list[int]
    kind: str  # "exact" (same content hash) or "near" (embedding cosine similarity)
    similarity: float  # smallest linking similarity in the group (1.0 for exact)


@dataclass
class QualityReport:
    items: int
    labeled: int
    label_issues: list[LabelIssue] = field(default_factory=list)
    outliers: list[Outlier] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_label_errors(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: QualityConfig) -> list[LabelIssue]:
    """Likely mislabeled items among (N, D) embeddings with (N,) class indices, worst first."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = out_of_sample_probabilities(x, y, n_classes, cfg.folds, cfg.c, cfg.seed)  # (N, C)
    present = np.unique(y)
    p = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)  # cleanlab: classes 0..K-1
    yy = np.searchsorted(present, y)
    flagged = find_label_issues(yy, p, filter_by=cfg.filter_by, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(yy, p)
    return [LabelIssue(int(i), int(y[i]), int(present[p[i].argmax()]), float(quality[i])) for i in flagged]


def find_outliers(x: np.ndarray, cfg: QualityConfig) -> list[Outlier]:
    """Atypical items among (N, D) embeddings, most atypical first."""
    from cleanlab.outlier import OutOfDistribution

    k = min(cfg.outlier_k, len(x) - 1)
    if k < 1:
        return []
    ood = OutOfDistribution(params={"k": k})
    scores = ood.fit_score(features=x, verbose=False)  # (N,) exp(-mean kNN distance / scale)
    dist = -np.log(np.clip(scores, 1e-300, None)) * float(ood.params["scaling_factor"])  # (N,) mean kNN distance
    q1, q3 = np.percentile(dist, [25, 75])
    limit = q3 + (1.0 / cfg.outlier_threshold - 1.0) * (q3 - q1)
    flagged = np.flatnonzero(dist > limit)
    return [Outlier(int(i), float(scores[i]), float(dist[i])) for i in flagged[np.argsort(scores[flagged])]]


def _components(n: int, pairs: list[tuple[int, int, float]]) -> list[tuple[list[int], float]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _ in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    low: dict[int, float] = {}
    for a, _, s in pairs:
        r = root(a)
        low[r] = min(low.get(r, 1.0), s)
    for i in {i for a, b, _ in pairs for i in (a, b)}:
        groups.setdefault(root(i), []).append(i)
    return [(sorted(members), low[r]) for r, members in groups.items()]


def find_duplicates(hashes: list[str], x: np.ndarray | None, cfg: QualityConfig) -> list[DuplicateGroup]:
    """Exact duplicates by content hash, then near duplicates by embedding cosine similarity."""
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        by_hash.setdefault(h, []).append(i)
    out = [DuplicateGroup(sorted(g), "exact", 1.0) for g in by_hash.values() if len(g) > 1]
    if x is None or len(x) < 2:
        return out
    faiss = optional.faiss()
    z = unit_rows(x - x.mean(axis=0, keepdims=True))  # (N, D) centred unit rows: inner product = cosine
    index = faiss.IndexFlatIP(z.shape[1])
    index.add(z)
    lims, sims, ids = index.range_search(z, cfg.near_duplicate)
    pairs = [
        (i, int(j), float(s))
        for i in range(len(z))
        for j, s in zip(ids[lims[i] : lims[i + 1]], sims[lims[i] : lims[i + 1]], strict=True)
        if i < j and hashes[i] != hashes[j]
    ]
    out += [DuplicateGroup(g, "near", min(s, 1.0)) for g, s in _components(len(z), pairs)]
    return sorted(out, key=lambda g: (g.kind != "exact", -g.similarity, g.indices))


def check_quality(
    hashes: list[str],
    embeddings: np.ndarray | None,
    labels: np.ndarray | None,
    n_classes: int,
    cfg: QualityConfig | None = None,
) -> QualityReport:
    """Run every check that the inputs allow.

    ``embeddings`` (N, D) enable label errors, outliers and near duplicates; ``labels`` (N,) hold
    class indices with -1 for unlabeled items. Checks that cannot run are explained in ``notes``.
    """
    cfg = cfg or QualityConfig()
    n = len(hashes)
    if n == 0:
        raise DataError("nothing to check: the dataset version has no items")
    x = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
    if x is not None and x.shape[0] != n:
        raise DataError(f"embeddings hold {x.shape[0]} rows for {n} items")
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    labeled = np.flatnonzero(y >= 0) if y is not None else np.empty(0, dtype=np.int64)
    report = QualityReport(items=n, labeled=len(labeled))
    report.duplicates = find_duplicates(hashes, x, cfg)
    if x is None:
        report.notes.append("no embeddings (give --backbone): only exact duplicates were checked")
        return report
    report.outliers = find_outliers(x, cfg)
    if y is None or len(labeled) == 0:
        report.notes.append("no visible labels: label errors not checked")
        return report
    try:
        issues = find_label_errors(x[labeled], y[labeled], n_classes, cfg)
    except DataError as exc:
        report.notes.append(f"label errors not checked: {exc}")
        return report
    report.label_issues = [LabelIssue(int(labeled[i.index]), i.given, i.suggested, i.quality) for i in issues]
    return report
