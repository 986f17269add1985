"""Agreement between full rankings (no ties): Kendall tau, pairwise agreement, per annotator pair and per item.

For two full rankings of the same n candidates, of the n(n-1)/2 candidate pairs ``C`` are ordered
the same way and ``D`` the opposite way: Kendall tau = (C - D) / (C + D) (tau-a = tau-b without
ties) and pairwise agreement = C / (C + D) = (tau + 1) / 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import fmean

from modelfab.core.errors import DataError

Ranking = Sequence[str]  # candidate ids, best -> worst


def _concordance(a: Ranking, b: Ranking) -> tuple[int, int]:
    if len(set(a)) != len(a) or set(a) != set(b) or len(a) != len(b):
        raise DataError(f"rankings must order the same candidates without ties: {list(a)} vs {list(b)}")
    if len(a) < 2:
        raise DataError(f"agreement needs at least two candidates, got {list(a)}")
    pos = {c: i for i, c in enumerate(b)}
    concordant = discordant = 0
    for i, j in combinations(range(len(a)), 2):  # a ranks a[i] above a[j]
        if pos[a[i]] < pos[a[j]]:
            concordant += 1
        else:
            discordant += 1
    return concordant, discordant


def kendall_tau(a: Ranking, b: Ranking) -> float:
    """Kendall tau between two full rankings of the same candidates (1 = same order, -1 = reversed)."""
    c, d = _concordance(a, b)
    return (c - d) / (c + d)


def pairwise_agreement(a: Ranking, b: Ranking) -> float:
    """Fraction of candidate pairs both rankings order the same way."""
    c, d = _concordance(a, b)
    return c / (c + d)


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two annotators, averaged over the items both ranked (``items`` of them)."""

    a: str
    b: str
    items: int
    kendall_tau: float | None
    pairwise: float | None

    def as_dict(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "items": self.items, "kendall_tau": self.kendall_tau,
                "pairwise": self.pairwise}


@dataclass(frozen=True)
class ItemAgreement:
    """Agreement on one item: mean over the pairs of its annotators (None with fewer than two)."""

    key: str
    annotators: tuple[str, ...]
    kendall_tau: float | None
    pairwise: float | None

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "annotators": list(self.annotators), "kendall_tau": self.kendall_tau,
                "pairwise": self.pairwise}


def pair_agreement(a: str, b: str, rankings: Mapping[str, Mapping[str, Ranking]]) -> PairAgreement:
    """Agreement of annotators ``a`` and ``b``; ``rankings``: annotator -> item key -> ranking."""
    common = sorted(set(rankings.get(a, {})) & set(rankings.get(b, {})))
    if not common:
        return PairAgreement(a, b, 0, None, None)
    taus = [kendall_tau(rankings[a][k], rankings[b][k]) for k in common]
    agree = [pairwise_agreement(rankings[a][k], rankings[b][k]) for k in common]
    return PairAgreement(a, b, len(common), fmean(taus), fmean(agree))


def annotator_agreement(rankings: Mapping[str, Mapping[str, Ranking]]) -> list[PairAgreement]:
    """Every annotator pair (sorted by name), including pairs without common items (``items == 0``)."""
    return [pair_agreement(a, b, rankings) for a, b in combinations(sorted(rankings), 2)]


def mean_agreement(pairs: Sequence[PairAgreement]) -> tuple[float | None, float | None]:
    """(mean Kendall tau, mean pairwise agreement) over the annotator pairs that share items."""
    used = [p for p in pairs if p.items and p.kendall_tau is not None and p.pairwise is not None]
    if not used:
        return None, None
    taus = [p.kendall_tau for p in used if p.kendall_tau is not None]
    agree = [p.pairwise for p in used if p.pairwise is not None]
    return fmean(taus), fmean(agree)


def item_agreement(rankings: Mapping[str, Mapping[str, Ranking]]) -> list[ItemAgreement]:
    """Per item (sorted by key): mean agreement over the pairs of annotators who ranked it."""
    by_item: dict[str, dict[str, Ranking]] = {}
    for annotator, items in rankings.items():
        for key, ranking in items.items():
            by_item.setdefault(key, {})[annotator] = ranking
    out = []
    for key in sorted(by_item):
        who = tuple(sorted(by_item[key]))
        pairs = list(combinations(who, 2))
        if not pairs:
            out.append(ItemAgreement(key, who, None, None))
            continue
        r = by_item[key]
        out.append(ItemAgreement(key, who, fmean(kendall_tau(r[x], r[y]) for x, y in pairs),
                                 fmean(pairwise_agreement(r[x], r[y]) for x, y in pairs)))
    return out


__all__ = ["ItemAgreement", "PairAgreement", "Ranking", "annotator_agreement", "item_agreement",
           "kendall_tau", "mean_agreement", "pair_agreement", "pairwise_agreement"]
