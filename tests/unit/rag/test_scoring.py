"""The QA scoring rule: normalisation, token F1, key facts, passage location and the recall overlap rule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelfab.core.errors import DataError
from modelfab.llm.rag.scoring import (
    contains_fact,
    fact_score,
    is_correct,
    locate_passage,
    normalize,
    overlap_fraction,
    retrieval_rank,
    token_f1,
)


def test_normalize() -> None:
    assert normalize("The  Cat, sat!\n on A mat.") == "cat sat on mat"
    assert normalize("Python 3.11's «new» features") == "python 311s new features"
    assert normalize("An apple — the end") == "apple end"
    assert normalize("  ") == ""


def test_token_f1_hand_values() -> None:
    # answer tokens [cat, sat, on, mat], reference [cat, on, mat]: common 3, P 3/4, R 1, F1 6/7
    assert token_f1("The cat sat on the mat.", "a cat on a mat") == pytest.approx(6 / 7)
    assert token_f1("nine", "The office opens at nine") == pytest.approx(2 * 1 * 0.25 / 1.25)  # P 1, R 1/4
    assert token_f1("go go go", "go") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # repeats count once
    assert token_f1("Nine!", "nine") == 1.0
    assert token_f1("five", "nine") == 0.0
    assert token_f1("the", "a") == 1.0  # both empty after normalisation
    assert token_f1("", "nine") == 0.0


def test_fact_containment() -> None:
    answer = "The office opens at 9:00 and the fee is 20 Euros [1]."
    assert contains_fact(answer, "20 euros")
    assert contains_fact(answer, "9:00")
    assert not contains_fact(answer, "0 euros")  # whole words only
    assert not contains_fact("open 19 hours", "9")
    assert fact_score(answer, ["20 euros", "nine", "9:00", "card"]) == 0.5
    assert is_correct(answer, ["20 euros", "9.00"])  # punctuation deleted on both sides
    assert not is_correct(answer, ["20 euros", "card"])
    with pytest.raises(DataError, match="at least one key fact"):
        fact_score(answer, [])
    with pytest.raises(DataError, match="empty after normalisation"):
        contains_fact(answer, "the")


@dataclass
class _Hit:
    source: str
    start: int
    end: int


def test_recall_overlap_rule() -> None:
    passage = (100, 200)
    assert overlap_fraction(passage, (150, 400)) == 0.5
    assert overlap_fraction(passage, (0, 149)) == 0.49
    assert overlap_fraction(passage, (0, 1000)) == 1.0
    assert overlap_fraction(passage, (200, 300)) == 0.0
    hits = [_Hit("b.md", 100, 200), _Hit("a.md", 0, 149), _Hit("a.md", 150, 400)]
    assert retrieval_rank("a.md", passage, hits) == 3  # rank 1: other document; rank 2: 49% only
    assert retrieval_rank("a.md", passage, hits[:2]) is None
    assert retrieval_rank("b.md", passage, hits) == 1


def test_locate_passage() -> None:
    text = "Intro.\n\nThe fee is 20\n   euros.  Pay by card."
    assert locate_passage(text, "Pay by card.") == (text.index("Pay"), len(text))
    span = locate_passage(text, "fee is 20 euros.")  # whitespace runs compare as one space
    assert span is not None and text[span[0]:span[1]] == "fee is 20\n   euros."
    assert locate_passage(text, "fee is 30 euros") is None
    assert locate_passage(text, "   ") is None
