"""The scoring rule of knowledge QA, the same for every arm (with and without retrieval).

Normalisation (:func:`normalize`): lowercase; delete punctuation (Unicode category ``P*`` and ASCII
punctuation, so ``3.11`` -> ``311`` and ``don't`` -> ``dont``); drop the articles ``a``, ``an``,
``the``; collapse whitespace.  Answers and references pass through the same function.

* **Token F1** (:func:`token_f1`): over the normalised whitespace tokens, ``2PR/(P+R)`` with
  precision ``P = common / len(answer)`` and recall ``R = common / len(reference)``, ``common``
  counting repeated tokens at most as often as they occur in both (SQuAD's rule); 1.0 when both are
  empty, 0.0 when only one is.
* **Key facts** (:func:`fact_score`): each QA item lists short key facts; a fact is *contained* when its
  normalised form occurs in the normalised answer as a whole-word sequence (``9`` is not in ``19``).
  The fact score is the fraction contained.
* **Correct** (:func:`is_correct`): an answer is correct when *all* its key facts are contained.
  Accuracy is the fraction of correct answers.

Retrieval recall (:func:`retrieval_rank`): a QA item's source passage is an exact substring of its
source document (:func:`locate_passage`; runs of whitespace compare as one space).  It counts as
retrieved at rank ``r`` when the ``r``-th retrieved chunk comes from the same source document and
overlaps the passage's character span by at least 50% of the passage's length (one chunk alone must
cover half the passage).  recall@k is the fraction of items retrieved at a rank <= k.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from modelfab.core.errors import DataError

ARTICLES = frozenset({"a", "an", "the"})
MIN_OVERLAP = 0.5
_ASCII_PUNCT = frozenset(string.punctuation)


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """Lowercase, delete punctuation, drop articles, collapse whitespace."""
    kept = "".join(ch for ch in text.lower() if not _is_punct(ch))
    return " ".join(w for w in kept.split() if w not in ARTICLES)


def token_f1(answer: str, reference: str) -> float:
    """Token-level F1 of ``answer`` against ``reference`` after :func:`normalize`."""
    a, r = normalize(answer).split(), normalize(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def contains_fact(answer: str, fact: str) -> bool:
    """Whether normalised ``fact`` occurs in normalised ``answer`` as whole words."""
    f = normalize(fact)
    if not f:
        raise DataError(f"key fact {fact!r} is empty after normalisation")
    return f" {f} " in f" {normalize(answer)} "


def fact_score(answer: str, facts: Sequence[str]) -> float:
    """Fraction of ``facts`` contained in ``answer``."""
    if not facts:
        raise DataError("facts: at least one key fact is needed to score an answer")
    return sum(contains_fact(answer, f) for f in facts) / len(facts)


def is_correct(answer: str, facts: Sequence[str]) -> bool:
    """An answer is correct when every key fact is contained."""
    return fact_score(answer, facts) == 1.0


class Located(Protocol):
    """Anything with a source document and a character span in it (a retrieved chunk)."""

    source: str
    start: int
    end: int


def overlap_fraction(passage: tuple[int, int], chunk: tuple[int, int]) -> float:
    """Fraction of the passage span ``[a, b)`` covered by the chunk span."""
    a, b = passage
    if b <= a:
        raise DataError(f"passage span {passage} is empty")
    return max(0, min(b, chunk[1]) - max(a, chunk[0])) / (b - a)


def retrieval_rank(source: str, passage: tuple[int, int], hits: Sequence[Located]) -> int | None:
    """1-based rank of the first hit that retrieves the passage (same source, >= 50% overlap), else None."""
    for rank, hit in enumerate(hits, start=1):
        if hit.source == source and overlap_fraction(passage, (hit.start, hit.end)) >= MIN_OVERLAP:
            return rank
    return None


_WS = re.compile(r"\s+")


def locate_passage(text: str, passage: str) -> tuple[int, int] | None:
    """Character span of ``passage`` in ``text``: exact match first, else with whitespace runs
    compared as one space (the span then covers the original characters).  None if absent."""
    needle = passage.strip()
    if not needle:
        return None
    at = text.find(needle)
    if at >= 0:
        return at, at + len(needle)
    squeezed: list[str] = []
    origin: list[int] = []  # origin[i]: index in text of squeezed[i]
    for m in re.finditer(r"\s+|\S+", text):
        if m.group().isspace():
            squeezed.append(" ")
            origin.append(m.start())
        else:
            squeezed.extend(m.group())
            origin.extend(range(m.start(), m.end()))
    hay = "".join(squeezed)
    target = _WS.sub(" ", needle)
    at = hay.find(target)
    if at < 0:
        return None
    last = at + len(target) - 1
    return origin[at], origin[last] + 1
