"""Prompt templates: parsing, validation (undefined, empty, duplicate, over-length), documents, chat rendering."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from modelfab.core.errors import ConfigError, DataError
from modelfab.llm.formats import SFT_MODALITY, chat_messages
from modelfab.llm.models import load_base, render_chat
from modelfab.llm.templates import (
    SourceRow,
    TokenCounter,
    document_rows,
    load_template,
    parse_template,
    render_dataset,
    table_rows,
    validate,
)
from modelfab.store.datasets import get_version, list_datasets, version_items
from modelfab.store.store import Store
from tests.llm_fixtures import register_tiny_chat

TEMPLATE = {"system": "You help with city services.", "user": "How do I {{ action }} a {{ service }}?",
            "assistant": "{{ answer }}"}


def _rows(*records: Mapping[str, object]) -> list[SourceRow]:
    return [SourceRow(n, f"row-{n:07d}", f"row {n}", dict(r)) for n, r in enumerate(records, 1)]


def _write_template(path: Path, data: Mapping[str, object]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_render_and_undefined_variables() -> None:
    tpl = parse_template(TEMPLATE, "permits", "t.yaml")
    assert tpl.variables == {"action", "service", "answer"} and tpl.has_assistant
    rows = _rows({"action": "renew", "service": "permit", "answer": " Pay the fee. "},
                 {"action": "renew", "answer": "x"},
                 {"answer": "y", "service": None})
    check = validate(tpl, rows, TokenCounter())
    assert [s.row.key for s in check.samples] == ["row-0000001"]
    assert check.samples[0].messages == [
        {"role": "system", "content": "You help with city services."},
        {"role": "user", "content": "How do I renew a permit?"},
        {"role": "assistant", "content": "Pay the fee."},  # stripped
    ]
    assert check.samples[0].tokens == 5 + 6 + 3  # whitespace estimate without a tokenizer
    assert [p.line for p in check.problems] == ["row 2: undefined variable 'service'",
                                                "row 3: undefined variables 'action', 'service'"]  # null = missing
    assert check.counts() == {"undefined": 2}
    assert check.summary() == "2 of 3 rows invalid (2 undefined); first: row 2: undefined variable 'service'"


def test_empty_duplicate_and_over_length() -> None:
    tpl = parse_template(TEMPLATE, "permits", "t.yaml")
    ok = {"action": "renew", "service": "permit", "answer": "Pay the fee at the counter."}
    rows = _rows(ok, {**ok, "answer": "  "}, dict(ok), {**ok, "answer": "word " * 50}, {**ok, "action": "cancel"})
    check = validate(tpl, rows, TokenCounter(), limit=30, limit_reason="--max-tokens")
    assert [s.row.number for s in check.samples] == [1, 5]
    assert [(p.kind, p.line) for p in check.problems] == [
        ("empty", "row 2: rendered 'assistant' is empty"),
        ("duplicate", "row 3: duplicate of row 1"),
        ("too-long", "row 4: 61 tokens, over the limit of 30 (--max-tokens)"),
    ]


def test_prompt_only_optional_system_and_sandbox() -> None:
    tpl = parse_template({"system": "{{ sys }}", "user": "Q: {{ q }}"}, "prompts", "p.yaml")
    assert not tpl.has_assistant
    check = validate(tpl, _rows({"q": "hi", "sys": ""}), TokenCounter())
    assert check.samples[0].messages == [{"role": "user", "content": "Q: hi"}]  # empty system is left out
    unsafe = parse_template({"user": "{{ q.__class__.__mro__ }}"}, "evil", "e.yaml")
    bad = validate(unsafe, _rows({"q": "x"}), TokenCounter())
    assert bad.problems[0].kind == "error" and "unsafe" in bad.problems[0].message


def test_template_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("user: [unclosed\n")
    with pytest.raises(DataError, match=r"broken.yaml: invalid YAML/JSON at line 2"):
        load_template(broken)
    with pytest.raises(DataError, match=r"'user' template, line 1: unexpected '}'"):
        load_template(_write_template(tmp_path / "syn.json", {"user": "{{ x }"}))
    with pytest.raises(DataError, match="no 'user' template"):
        load_template(_write_template(tmp_path / "nouser.json", {"assistant": "a"}))
    with pytest.raises(DataError, match=r"unknown keys \['prompt'\]"):
        load_template(_write_template(tmp_path / "extra.json", {"user": "u", "prompt": "p"}))
    with pytest.raises(DataError, match="no such template file"):
        load_template(tmp_path / "missing.yaml")
    named = load_template(_write_template(tmp_path / "file.json", {"name": "hotline", "user": "{{ q }}"}))
    assert named.name == "hotline" and named.variables == {"q"}


def test_table_and_document_rows(tmp_path: Path) -> None:
    table = tmp_path / "rows.jsonl"
    table.write_text('{"q": "a"}\n\n{"q": "b", "n": 2}\n')
    rows = table_rows(table)
    assert [(r.number, r.key, r.where) for r in rows] == [(1, "row-0000001", "row 1"), (2, "row-0000002", "row 2")]
    assert rows[1].variables == {"q": "b", "n": 2}
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "permits.md").write_text("intro\n# Parking permits\nRenew yearly.\n")
    (docs / "sub" / "notes.txt").write_text("plain notes\n")
    (docs / ".hidden.md").write_text("# secret\n")
    (docs / "image.png").write_bytes(b"\x89PNG")
    rows = document_rows(docs)
    assert [r.key for r in rows] == ["permits.md", "sub/notes.txt"]
    assert rows[0].variables == {"document": "intro\n# Parking permits\nRenew yearly.\n", "title": "Parking permits",
                                 "path": "permits.md"}
    assert rows[1].variables["title"] == "notes"  # no heading: the file stem
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \.md or \.txt documents"):
        document_rows(empty)
    tpl = parse_template({"user": "Summarise {{ title }}", "assistant": "{{ document }}"}, "docs", "d.yaml")
    check = validate(tpl, rows, TokenCounter())
    assert check.samples[0].messages[0]["content"] == "Summarise Parking permits" and not check.problems


def test_render_dataset_with_chat_template(store: Store, tmp_path: Path,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    template = _write_template(tmp_path / "permits.json", TEMPLATE)
    rows = tmp_path / "rows.csv"
    rows.write_text("action,service,answer\nrenew,permit,Pay the fee.\napply for,licence,Fill in form B7.\n"
                    "cancel,contract,Call the hotline.\nrenew,passport,Bring a photo.\nmove,office,\n")
    with pytest.raises(DataError, match=r"^1 of 5 rows invalid \(1 empty\); first: row 5: rendered 'assistant'"):
        render_dataset(store, template, model="tinychat", name="sft", rows=rows)
    assert list_datasets(store) == []  # nothing written
    with pytest.raises(ConfigError, match="exactly one of --rows FILE or --docs DIR"):
        render_dataset(store, template, model="tinychat", name="sft")
    result, check = render_dataset(store, template, model="tinychat", name="sft", rows=rows, skip_invalid=True)
    assert result.ref == "sft@1" and result.items == 4 and result.skipped[0][0] == "row-0000005"
    dv = get_version(store, "sft")
    assert dv.dataset.modality == SFT_MODALITY and dv.tasks == {"sft": {"type": "sft"}}
    backbone, _ = load_base(store, "tinychat")
    items = version_items(store, "sft")
    assert {i.split for i in items} <= {"train", "val", "test"}
    first = items[0]
    messages = chat_messages(first.text)
    assert messages[1] == {"role": "user", "content": "How do I renew a permit?"}
    rendered = render_chat(backbone.tokenizer, messages, add_generation_prompt=False)
    assert rendered.count("<|im_start|>") == 3 and rendered.endswith("Pay the fee.<|im_end|>\n")
    assert first.meta["tokens"] == len(backbone.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert first.meta["template"] == "permits" and first.meta["row"] == 1
    assert check.exact_tokens and check.limit == 256 and check.limit_reason == "context of tinychat:1"
    # a limit below the samples' lengths names the row, the count and the limit
    with pytest.raises(DataError, match=r"first: row 1: \d+ tokens, over the limit of 5 \(--max-tokens\)"):
        render_dataset(store, template, model="tinychat", name="sft", rows=rows, max_tokens=5)
