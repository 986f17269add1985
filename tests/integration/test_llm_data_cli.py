"""The language-model data CLI end to end (in-process): template -> candidates -> rankings -> agreement -> pairs."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelfab.llm.formats import parse_ranking, preference_pair
from modelfab.store.datasets import version_items
from modelfab.store.store import Store
from tests.conftest import CliResult
from tests.llm_fixtures import register_tiny_chat

Cli = Callable[..., CliResult]

TEMPLATE = """\
name: permits
system: You answer questions about city services.
user: How do I {{ action }} a {{ service }}?
assistant: "{{ answer }}"
"""
ROWS = """\
action,service,answer
renew,parking permit,Bring the old permit and pay the fee.
apply for,building permit,Submit the plans online.
cancel,water contract,Call the hotline with your contract number.
renew,passport,Book an appointment and bring a photo.
transfer,business license,Fill in form B7 at the trade office.
register,dog,Show the vaccination card at the city hall.
replace,lost ID card,Report the loss and apply again.
"""
BASE = ["c2", "c0", "c1"]  # ann and bob agree on this order; cy ranks the reverse


def _one_line_error(res: CliResult, fragment: str) -> None:
    assert res.code == 2, res
    lines = [ln for ln in res.err.strip().splitlines() if not re.fullmatch(r".+: \d+/\d+", ln)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.err


def _json(res: CliResult) -> Any:
    assert res.code == 0, res.err
    return json.loads(res.out)


def test_template_to_preference_pairs(cli: Cli, store: Store, tmp_path: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    template, rows = tmp_path / "permits.yaml", tmp_path / "rows.csv"
    template.write_text(TEMPLATE)
    rows.write_text(ROWS)
    preview = _json(cli("llm", "template", "preview", str(template), "--rows", str(rows), "-n", "2", "--json"))
    assert preview["valid"] == 7 and len(preview["samples"]) == 2 and preview["token_count"].startswith("estimate")
    sft = _json(cli("llm", "template", "render", str(template), "--rows", str(rows), "--model", "tinychat",
                    "--name", "sft", "--json"))
    assert sft["dataset"] == "sft@1" and sft["items"] == 7 and sum(sft["splits"].values()) == 7
    assert set(sft["splits"]) <= {"train", "val", "test"}
    shown = _json(cli("data", "show", "sft", "--json"))  # a non-class task is described, not counted
    assert shown["modality"] == "chat" and shown["tasks"]["sft"]["type"] == "sft"

    rk = _json(cli("llm", "rank", "candidates", "sft", "--model", "tinychat", "-n", "3", "--max-new-tokens", "6",
                   "--name", "rk", "--json"))
    assert rk["dataset"] == "rk@1" and rk["items"] == 7
    prompts = {r.key: (r, parse_ranking(r.text)) for r in version_items(store, "rk@1")}
    assert all(p.ids == ["c0", "c1", "c2"] and p.reference for _, p in prompts.values())
    assert {k: r.split for k, (r, _) in prompts.items()} == {r.key: r.split for r in version_items(store, "sft")}

    assigned = _json(cli("llm", "rank", "assign", "rk", "--annotators", "ann,bob,cy", "--overlap", "2", "--json"))
    assert assigned["dataset"] == "rk@2" and sum(assigned["assignments"].values()) == 14
    assert sorted(assigned["assignments"].values()) == [4, 5, 5]
    _one_line_error(cli("llm", "rank", "assign", "rk", "--annotators", "ann,bob", "--overlap", "3"), "overlap")

    ranked_by: dict[str, list[str]] = {}
    for annotator in ("ann", "bob", "cy"):
        tasks_file = tmp_path / f"{annotator}.tasks.jsonl"
        assert cli("llm", "rank", "export", "rk", "--annotator", annotator, "-o", str(tasks_file)).code == 0
        tasks = [json.loads(line) for line in tasks_file.read_text().splitlines()]
        assert len(tasks) == assigned["assignments"][annotator]
        assert all(sorted(c["id"] for c in t["candidates"]) == ["c0", "c1", "c2"] for t in tasks)
        ranked_by[annotator] = [t["key"] for t in tasks]
        order = BASE[::-1] if annotator == "cy" else BASE
        answers = tmp_path / f"{annotator}.rankings.jsonl"
        answers.write_text("".join(json.dumps({"key": t["key"], "ranking": order}) + "\n" for t in tasks))
        imported = _json(cli("llm", "rank", "import", "rk", str(answers), "--annotator", annotator, "--json"))
        assert imported["items"] == len(tasks)
    assert imported["dataset"] == "rk@5"
    tie = tmp_path / "tie.jsonl"
    tie.write_text(json.dumps({"key": ranked_by["ann"][0], "ranking": ["c0", "c0", "c1"]}) + "\n")
    _one_line_error(cli("llm", "rank", "import", "rk", str(tie), "--annotator", "ann"), ":1: ")
    assert _json(cli("llm", "rank", "synthetic", "rk", "--json"))["dataset"] == "rk@6"

    agreement = _json(cli("llm", "rank", "agreement", "rk", "--json"))
    assert agreement["rankers"] == {"ann": "human", "bob": "human", "cy": "human"}  # the rule is left out
    pairs = {(p["a"], p["b"]): p for p in agreement["pairs"]}
    shared = {(a, b): len(set(ranked_by[a]) & set(ranked_by[b])) for a, b in pairs}
    assert all(pairs[k]["items"] == shared[k] > 0 for k in pairs)
    assert pairs[("ann", "bob")]["kendall_tau"] == 1.0 and pairs[("ann", "bob")]["pairwise"] == 1.0
    assert pairs[("ann", "cy")]["kendall_tau"] == -1.0 and pairs[("bob", "cy")]["pairwise"] == 0.0
    assert agreement["mean"]["kendall_tau"] == pytest.approx(-1 / 3)
    assert agreement["mean"]["pairwise"] == pytest.approx(1 / 3)
    assert len(agreement["items"]) == 7
    table = cli("llm", "rank", "agreement", "rk")
    assert table.code == 0 and "kendall tau" in table.out and "-0.333" in table.out

    pref = _json(cli("llm", "rank", "pairs", "rk", "--name", "pref", "--json"))
    # items ranked by ann+bob keep their order (c2 best); with cy the Borda points tie: c0 (listed first) is best
    expected = set()
    for key, (_, prompt) in prompts.items():
        best = "c0" if key in ranked_by["cy"] else "c2"
        for worse in (c for c in ("c0", "c1", "c2") if c != best):
            if prompt.candidates[best] != prompt.candidates[worse]:
                expected.add(f"{key}#{best}>{worse}")
    rows_out = version_items(store, "pref")
    assert pref["dataset"] == "pref@1" and pref["items"] == len(expected) == len(rows_out)
    assert {r.key for r in rows_out} == expected
    assert pref["groups"] == {"human": ["ann", "bob", "cy"]} and pref["identical_skipped"] == 14 - len(expected)
    for r in rows_out:
        ranking_row, prompt = prompts[r.meta["prompt_key"]]
        assert r.split == ranking_row.split and r.meta["synthetic"] is False  # one split per prompt
        messages, chosen, rejected = preference_pair(r.text)
        assert messages == prompt.prompt and chosen == prompt.candidates[r.meta["chosen_id"]]
        assert rejected == prompt.candidates[r.meta["rejected_id"]]
    assert pref["splits"] == dict(sorted(Counter(r.split for r in rows_out).items()))
    listing = {d["name"]: d["modality"] for d in _json(cli("data", "list", "--json"))}
    assert listing == {"sft": "chat", "rk": "ranking", "pref": "preference"}


def test_bad_template_input_writes_nothing(cli: Cli, store: Store, tmp_path: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    rows = tmp_path / "rows.csv"
    rows.write_text(ROWS)
    broken = tmp_path / "broken.yaml"
    broken.write_text("user: How do I {{ action }}?\nassistant: [oops\n")
    render = ("llm", "template", "render", "--rows", str(rows), "--model", "tinychat", "--name", "sft")
    _one_line_error(cli(*render[:3], str(broken), *render[3:]), "invalid YAML/JSON at line 3")
    undefined = tmp_path / "undefined.yaml"
    undefined.write_text("user: How do I {{ action }} a {{ servise }}?\nassistant: '{{ answer }}'\n")
    _one_line_error(cli(*render[:3], str(undefined), *render[3:]),
                    "7 of 7 rows invalid (7 undefined); first: row 1: undefined variable 'servise'")
    empty = tmp_path / "docs"
    empty.mkdir()
    _one_line_error(cli("llm", "template", "render", str(undefined), "--docs", str(empty), "--model", "tinychat",
                        "--name", "sft"), "no .md or .txt documents")
    _one_line_error(cli("llm", "template", "preview", str(undefined)), "exactly one of --rows FILE or --docs DIR")
    assert _json(cli("data", "list", "--json")) == []
    shown = cli("llm", "template", "preview", str(undefined), "--rows", str(rows))
    assert shown.code == 0 and "undefined variable 'servise'" in shown.out and "7 of 7 rows invalid" in shown.out
