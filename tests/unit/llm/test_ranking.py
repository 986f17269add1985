"""Ranking maths (assignments, Kendall tau, pairwise agreement, Borda, F1) and ranking data round trips."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
from scipy.stats import kendalltau

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.llm.agreement import (
    annotator_agreement,
    item_agreement,
    kendall_tau,
    mean_agreement,
    pairwise_agreement,
)
from modelfab.llm.formats import (
    RANKING_MODALITY,
    chat_messages,
    chat_text,
    parse_ranking,
    preference_pair,
    preference_text,
    ranking_item,
)
from modelfab.llm.preference import borda, pair_ids, pairs
from modelfab.llm.ranking import (
    RankingFileError,
    assign,
    assignment_plan,
    import_rankings,
    load_ranking,
    split_prompt,
    synthetic_rankings,
    task_records,
    token_f1,
)
from modelfab.store.datasets import VersionSpec, create_version, list_versions, version_items
from modelfab.store.store import Store

# --- pure maths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_items", [0, 1, 7, 20, 33])
def test_assignment_balance_and_overlap(n_items: int) -> None:
    keys = [f"item-{i:03d}" for i in range(n_items)]
    for n_ann in range(1, 6):
        names = [f"ann{i}" for i in range(n_ann)]
        for overlap in range(1, n_ann + 1):
            plan = assignment_plan(keys, names, overlap, seed=3)
            assert set(plan) == set(names)
            per_item = Counter(k for ks in plan.values() for k in ks)
            assert all(per_item[k] == overlap for k in keys) and set(per_item) == set(keys)
            assert all(len(set(ks)) == len(ks) for ks in plan.values())  # distinct annotators per item
            loads = [len(ks) for ks in plan.values()]
            assert max(loads) - min(loads) <= 1, (n_items, n_ann, overlap, loads)
            assert plan == assignment_plan(list(reversed(keys)), names, overlap, seed=3)  # order-independent


def test_assignment_covers_every_pair_and_rejects_bad_input() -> None:
    keys = [f"k{i}" for i in range(12)]
    plan = assignment_plan(keys, ["a", "b", "c", "d"], 2)
    shared = {(x, y): len(set(plan[x]) & set(plan[y])) for x, y in combinations(sorted(plan), 2)}
    assert all(n > 0 for n in shared.values()), shared  # agreement is measurable for every pair
    assert assignment_plan(keys, ["a", "b", "c", "d"], 2, seed=1) != plan
    with pytest.raises(ConfigError, match=r"overlap: must be between 1 and the number of annotators \(3\), got 4"):
        assignment_plan(keys, ["a", "b", "c"], 4)
    with pytest.raises(ConfigError, match="overlap"):
        assignment_plan(keys, ["a"], 0)
    with pytest.raises(ConfigError, match="duplicate"):
        assignment_plan(keys, ["a", "a"], 1)
    with pytest.raises(ConfigError, match="annotator name 'rule:x'"):
        assignment_plan(keys, ["rule:x"], 1)


def test_kendall_and_pairwise_hand_values() -> None:
    base = ["a", "b", "c", "d"]
    assert kendall_tau(base, base) == 1.0 and pairwise_agreement(base, base) == 1.0
    assert kendall_tau(base, base[::-1]) == -1.0 and pairwise_agreement(base, base[::-1]) == 0.0
    swapped = ["b", "a", "c", "d"]  # 1 of 6 pairs discordant
    assert kendall_tau(base, swapped) == pytest.approx(4 / 6)
    assert pairwise_agreement(base, swapped) == pytest.approx(5 / 6)
    assert kendall_tau(["x", "y", "z"], ["y", "z", "x"]) == pytest.approx(-1 / 3)  # C=1, D=2
    with pytest.raises(DataError, match="same candidates"):
        kendall_tau(["a", "b"], ["a", "c"])
    with pytest.raises(DataError, match="same candidates"):
        kendall_tau(["a", "a"], ["a", "a"])
    with pytest.raises(DataError, match="at least two"):
        kendall_tau(["a"], ["a"])


def test_kendall_matches_scipy() -> None:
    rng = random.Random(0)
    for n in (2, 3, 5, 8):
        for _ in range(20):
            a = [f"c{i}" for i in range(n)]
            b = a[:]
            rng.shuffle(b)
            rng.shuffle(a)
            pos_a, pos_b = [a.index(c) for c in sorted(a)], [b.index(c) for c in sorted(a)]
            expected = kendalltau(pos_a, pos_b).statistic
            assert kendall_tau(a, b) == pytest.approx(expected)
            assert pairwise_agreement(a, b) == pytest.approx((expected + 1) / 2)


def test_agreement_per_pair_and_item() -> None:
    order, rev = ["c0", "c1", "c2"], ["c2", "c1", "c0"]
    rankings = {
        "ann": {"k1": order, "k2": order, "k3": order},
        "bob": {"k1": order, "k2": ["c1", "c0", "c2"]},
        "cy": {"k3": rev},
        "dee": {},
    }
    pairs = {(p.a, p.b): p for p in annotator_agreement(rankings)}
    assert len(pairs) == 6
    ab = pairs[("ann", "bob")]
    assert ab.items == 2 and ab.kendall_tau == pytest.approx((1 + 1 / 3) / 2) and ab.pairwise == pytest.approx(5 / 6)
    assert pairs[("ann", "cy")].kendall_tau == -1.0 and pairs[("ann", "cy")].pairwise == 0.0
    assert pairs[("bob", "cy")].items == 0 and pairs[("bob", "cy")].kendall_tau is None
    tau, agree = mean_agreement(list(pairs.values()))  # over the 2 pairs that share items
    assert tau == pytest.approx(((2 / 3) - 1) / 2) and agree == pytest.approx((5 / 6 + 0) / 2)
    items = {i.key: i for i in item_agreement(rankings)}
    assert items["k1"].kendall_tau == 1.0 and items["k1"].annotators == ("ann", "bob")
    assert items["k2"].kendall_tau == pytest.approx(1 / 3) and items["k3"].pairwise == 0.0
    assert mean_agreement([]) == (None, None)


def test_borda_pairs_and_f1() -> None:
    order, points = borda([["a", "b", "c"], ["b", "a", "c"], ["a", "c", "b"]], ["a", "b", "c"])
    assert order == ["a", "b", "c"] and points == {"a": 5, "b": 3, "c": 1}
    tied, _ = borda([["a", "b"], ["b", "a"]], ["b", "a"])  # tie: the candidate listed first wins
    assert tied == ["b", "a"]
    with pytest.raises(DataError, match="unknown candidate"):
        borda([["a", "z"]], ["a", "b"])
    assert pair_ids(["a", "b", "c"]) == [("a", "b"), ("a", "c")]
    assert pair_ids(["a", "b", "c"], all_pairs=True) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert token_f1("The cat sat.", "the cat") == pytest.approx(2 / 3)  # articles dropped: P 1/2, R 1
    assert token_f1("dog", "the cat") == 0.0 and token_f1("", "x") == 0.0
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)


def test_formats_round_trip() -> None:
    msgs = [{"role": "user", "content": "Grüß dich"}, {"role": "assistant", "content": "hallo"}]
    text = chat_text(msgs)
    assert "Grüß" in text and chat_messages(text) == msgs
    assert preference_pair(preference_text(msgs[:1], "good", "bad")) == (msgs[:1], "good", "bad")
    with pytest.raises(DataError, match="not a chat item"):
        chat_messages("not json")
    assert split_prompt([{"role": "system", "content": "s"}, *msgs]) == (
        [{"role": "system", "content": "s"}, msgs[0]], "hallo")
    assert split_prompt(msgs[:1]) == (msgs[:1], None)
    with pytest.raises(DataError, match="no user message"):
        split_prompt([{"role": "system", "content": "s"}])


# --- ranking data through the store ----------------------------------------------------------------------------


def _ranking_dataset(store: Store) -> str:
    """Three prompts with three candidates each (the third without a reference), written as version 1."""
    items = []
    for i in range(3):
        cands = [("c0", f"renew the permit {i}"), ("c1", "call the office"), ("c2", "the permit is renewed online")]
        ref = "renew the permit online" if i < 2 else None
        items.append(ranking_item(f"p{i}", [{"role": "user", "content": f"question {i}?"}], cands, ref, "m_test"))
    spec = VersionSpec(items=items, splits={"p0": "train", "p1": "train", "p2": "test"},
                       label_schema={"rankers": {}, "assignments": {}, "overlap": 0})
    create_version(store, "rk", RANKING_MODALITY, spec)
    return "rk"


def _jsonl(path: Path, *records: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_import_errors_are_all_reported(store: Store, tmp_path: Path) -> None:
    ref = _ranking_dataset(store)
    assign(store, ref, ["ann", "bob"], 1)
    plan = load_ranking(store, ref).assignments
    mine, other = plan["ann"][0], plan["bob"][0]
    bad = _jsonl(tmp_path / "bad.jsonl",
                 {"key": mine, "ranking": ["c0", "c0", "c1"]},
                 {"key": "nope", "ranking": ["c0", "c1", "c2"]},
                 {"key": mine, "ranking": [["c0", "c1"], "c2"]},
                 {"key": mine, "ranking": ["c0", "c1", "c9"]},
                 {"key": mine, "ranking": ["c0", "c1"]},
                 {"key": other, "ranking": ["c0", "c1", "c2"]},
                 "{broken",
                 {"ranking": ["c0"]})
    with pytest.raises(RankingFileError) as err:
        import_rankings(store, ref, bad, "ann")
    lines = err.value.errors
    assert lines == [
        f"{bad}:1: {mine}: tie: candidate 'c0' appears 2 times",
        f"{bad}:2: unknown item key 'nope'",
        f"{bad}:3: item {mine!r} ranked twice (first at line 1)",
        f"{bad}:4: item {mine!r} ranked twice (first at line 1)",
        f"{bad}:5: item {mine!r} ranked twice (first at line 1)",
        f"{bad}:6: item {other!r} is not assigned to annotator 'ann'",
        f"{bad}:7: invalid JSON (Expecting property name enclosed in double quotes)",
        f'{bad}:8: expected {{"key": ..., "ranking": [ids best -> worst]}}',
    ]
    assert str(err.value).endswith("(+7 more errors); nothing imported from bad.jsonl")
    for n, (ranking, message) in enumerate([
        ([["c0", "c1"], "c2"], "ties are not allowed"),
        (["c0", "c1", "c9"], "unknown candidates c9 (item has c0, c1, c2)"),
        (["c0", "c1"], "incomplete ranking: missing c2"),
    ]):
        one = _jsonl(tmp_path / f"one{n}.jsonl", {"key": mine, "ranking": ranking})
        with pytest.raises(RankingFileError, match=re.escape(message)):
            import_rankings(store, ref, one, "ann")
    with pytest.raises(NotFoundError, match=r"annotator 'cy' has no assignments"):
        import_rankings(store, ref, bad, "cy")
    assert len(list_versions(store, ref)) == 2  # v1 + the assignment; nothing imported


def test_import_synthetic_and_pairs(store: Store, tmp_path: Path) -> None:
    ref = _ranking_dataset(store)
    tasks = task_records(store, ref, "ann")  # no assignments: every item
    assert [t["key"] for t in tasks] == ["p0", "p1", "p2"] and "reference" not in tasks[0]
    assert sorted(c["id"] for c in tasks[0]["candidates"]) == ["c0", "c1", "c2"]
    assert tasks == task_records(store, ref, "ann")  # deterministic shuffle
    # only synthetic rankings: pairs need --include-synthetic
    synth = synthetic_rankings(store, ref)
    assert synth.ref == "rk@2" and synth.items == 2 and synth.skipped == [("p2", "no reference answer")]
    rows = {r.key: r for r in version_items(store, "rk@2")}
    # F1 vs "renew the permit online": c0 (P 3/4, R 3/4: 0.75) > c2 (P 3/5, R 3/4: 0.67) > c1 (0)
    assert rows["p0"].labels == {"rank:rule:reference-f1": ["c0", "c2", "c1"]}
    with pytest.raises(ConfigError, match=r"only synthetic rankings .* pass --include-synthetic"):
        pairs(store, ref, "pref")
    # a human ranks all three prompts
    good = _jsonl(tmp_path / "ann.jsonl", *[{"key": f"p{i}", "ranking": ["c1", "c0", "c2"]} for i in range(3)])
    imported = import_rankings(store, ref, good, "ann")
    assert imported.ref == "rk@3" and imported.items == 3
    rv = load_ranking(store, ref)
    assert rv.rankers == {"rule:reference-f1": {"kind": "synthetic", "rule": "reference-f1"}, "ann": {"kind": "human"}}
    assert rv.version.parent_id == load_ranking(store, "rk@2").version.id
    human = pairs(store, ref, "pref")
    items = version_items(store, "pref")
    assert human.result.items == 6 and human.groups == {"human": ["ann"]}
    assert all(i.meta["synthetic"] is False and i.meta["rankers"] == ["ann"] for i in items)
    assert {i.key for i in items} == {f"p{i}#c1>{w}" for i in range(3) for w in ("c0", "c2")}
    assert {i.key: i.split for i in items}["p2#c1>c0"] == "test"  # the prompt's split
    prompt, chosen, rejected = preference_pair(items[0].text)
    assert prompt == [{"role": "user", "content": "question 0?"}] and chosen == "call the office"
    assert rejected == "renew the permit 0"
    assert items[0].meta["source"] == "rk@3" and items[0].meta["prompt_key"] == "p0"
    both = pairs(store, ref, "pref2", include_synthetic=True, all_pairs=True)
    assert both.pairs == {"human": 9, "synthetic": 6} and both.prompts == {"human": 3, "synthetic": 2}
    rows2 = version_items(store, "pref2")
    synthetic = [r for r in rows2 if r.meta["synthetic"]]
    assert len(synthetic) == 6 and all(r.key.split("#")[1] == "synthetic" for r in synthetic)
    assert all(r.meta["rankers"] == ["rule:reference-f1"] for r in synthetic)  # never merged with ann
    assert parse_ranking(rv.spec.items[0].text).reference == "renew the permit online"
