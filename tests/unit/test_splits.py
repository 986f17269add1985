from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfab.core.errors import ConfigError
from modelfab.data.splits import OFFICIAL_RATIOS, parse_ratios, split_hash, stratified_split


def _strata(n: int) -> dict[str, str]:
    return {f"item{i:05d}": ("a" if i % 3 else "b") for i in range(n)}


def test_deterministic_and_order_independent() -> None:
    strata = _strata(500)
    shuffled = list(strata.items())
    random.Random(1).shuffle(shuffled)
    a = stratified_split(strata, OFFICIAL_RATIOS, seed=0)
    b = stratified_split(dict(shuffled), OFFICIAL_RATIOS, seed=0)
    assert a == b
    assert split_hash(a) == split_hash(b)


def test_seed_changes_assignment() -> None:
    strata = _strata(500)
    assert stratified_split(strata, OFFICIAL_RATIOS, 0) != stratified_split(strata, OFFICIAL_RATIOS, 1)


def test_stratified_proportions() -> None:
    strata = _strata(3000)
    splits = stratified_split(strata, OFFICIAL_RATIOS, seed=0)
    for stratum in ("a", "b"):
        keys = [k for k, s in strata.items() if s == stratum]
        counts = Counter(splits[k] for k in keys)
        for name, ratio in OFFICIAL_RATIOS.items():
            assert abs(counts[name] - ratio * len(keys)) <= 1


def test_adding_items_keeps_most_assignments() -> None:
    small = stratified_split({f"k{i}": None for i in range(1000)}, {"train": 0.8, "test": 0.2}, 0)
    big = stratified_split({f"k{i}": None for i in range(1010)}, {"train": 0.8, "test": 0.2}, 0)
    same = sum(small[k] == big[k] for k in small)
    assert same >= 980


@given(n=st.integers(1, 300), seed=st.integers(0, 10))
@settings(max_examples=40, deadline=None)
def test_every_item_assigned_once(n: int, seed: int) -> None:
    strata = {f"x{i}": i % 4 for i in range(n)}
    splits = stratified_split(strata, {"train": 0.6, "val": 0.2, "test": 0.2}, seed)
    assert set(splits) == set(strata)
    assert set(splits.values()) <= {"train", "val", "test"}


@pytest.mark.parametrize("text", ["train=0.5,val=0.6", "train=1.2,test=-0.2", "bogus=1.0", "train", "train=x"])
def test_bad_ratios(text: str) -> None:
    with pytest.raises(ConfigError, match="ratios"):
        parse_ratios(text)


def test_parse_ratios() -> None:
    assert parse_ratios("train=0.8,test=0.2") == {"train": 0.8, "test": 0.2}
