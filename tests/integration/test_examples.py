"""The example pipelines of examples/, at a tiny size, through the CLI on real ELPV subsets and real models:
``modelfab demo`` (solar-cell inspection: the whole loop), then a second line from its L1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ("reference=240", "pool=120", "adapt_steps=2", "recall=0.6", "prune=0.3", "auroc_bar=0.5", "traffic=12")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    return tmp_path / "home"


@pytest.mark.timeout(900)
def test_demo_then_a_second_line(cli, home: Path) -> None:  # type: ignore[no-untyped-def]
    sets = [a for kv in TINY for a in ("--set", kv)]
    res = cli("demo", *sets)
    assert res.code == 0, res.err
    for text in ("demo summary", "filtered as normal", "requests, accuracy", "re-tuned vs first", "serve it:"):
        assert text in res.out, text
    runs = json.loads(cli("runs", "list", "--kind", "pipeline", "--json").out)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    outputs = runs[0]["outputs"]
    first, second = outputs["tune"]["model"], outputs["retune"]["model"]
    shown = json.loads(cli("models", "show", second, "--json").out)
    assert shown["name"] == "solar-cell-defect" and shown["version"] == 2
    assert shown["parent_id"] == outputs["adapt"]["model"]  # both L2s come from the L1
    assert json.loads(cli("models", "show", first, "--json").out)["version"] == 1
    assert outputs["feedback"]["dataset"].startswith("solar-pool@")
    assert json.loads(cli("models", "show", "solar-cell-defect@production", "--json").out)["id"] == first
    assert Path(outputs["compare"]["report"]).exists()
    again = cli("demo", *sets)  # cached: everything but the gates, the deployment and the field traffic
    assert again.code == 0, again.err
    res = cli("run", str(ROOT / "examples/new-line-from-existing-l1/pipeline.yaml"), "--set", "size=200",
              "--set", "skip=400", "--set", "shots=6", "--set", "budget_s=20", "--json")  # fmt: skip
    assert res.code == 0, res.err
    steps = {s["name"]: s for s in json.loads(res.out)["steps"]}
    line2 = json.loads(cli("models", "show", steps["tune"]["outputs"]["model"], "--json").out)
    assert line2["parent_id"] == outputs["adapt"]["model"]  # the new line reuses the industry model


@pytest.mark.timeout(600)
def test_review_sentiment(cli, home: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("models", "add-foundation", "multilingual-e5-small", "--as", "e5-small").code == 0
    res = cli("run", str(ROOT / "examples/review-sentiment/pipeline.yaml"), "--set", "per_class=40", "--set", "shots=5",
              "--set", "field=20", "--set", "traffic=20", "--set", "auroc_bar=0.5", "--json")  # fmt: skip
    assert res.code == 0, res.err
    steps = {s["name"]: s for s in json.loads(res.out)["steps"]}
    assert steps["field"]["outputs"]["requests"] == 20
    assert steps["feedback"]["outputs"]["dataset"] == "reviews@2" and steps["feedback"]["outputs"]["added"] >= 1
    second = json.loads(cli("models", "show", steps["retune"]["outputs"]["model"], "--json").out)
    assert second["name"] == "review-sentiment" and second["version"] == 2
    assert steps["compare"]["outputs"]["metrics"]["test"]["auroc"] > 0.5


@pytest.mark.timeout(600)
def test_policy_assistant(cli, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The language-model example at a tiny size: tiny chat LM and encoder, a few steps of each training."""
    from modelfab.zoo.testing import write_tiny_chat_lm, write_tiny_hf_model

    chat = write_tiny_chat_lm(tmp_path / "tiny-chat")
    encoder = write_tiny_hf_model(tmp_path / "tiny-enc", "text")
    assert cli("models", "add-foundation", "local", "--path", str(chat), "--as", "tinychat").code == 0
    assert cli("models", "add-foundation", "local", "--path", str(encoder), "--as", "tinyenc").code == 0
    sets = ("base=tinychat", "encoder=tinyenc", "sft_steps=2", "dpo_steps=2", "candidates=2", "answer_tokens=4",
            "qa_items=3", "nll_limit=100", "skip_invalid=true")
    args = [a for kv in sets for a in ("--set", kv)]
    res = cli("run", str(ROOT / "examples/policy-assistant/pipeline.yaml"), *args, "--json")
    assert res.code == 0, res.err
    steps = {s["name"]: s for s in json.loads(res.out)["steps"]}
    assert {s["status"] for s in steps.values()} == {"succeeded"}
    sft, dpo = steps["sft"]["outputs"]["model"], steps["dpo"]["outputs"]["model"]
    shown = json.loads(cli("models", "show", dpo, "--json").out)
    assert shown["parent_id"] == sft and shown["task"] == "chat" and shown["tier"] == "L2"
    assert "general_nll_change" in steps["sft"]["outputs"]["metrics"]
    qa = steps["qa"]["outputs"]["metrics"]
    assert set(qa) == {"rag", "no_retrieval"} and 0 <= qa["rag"]["accuracy"] <= 1
    assert steps["pairs"]["outputs"]["pairs"] >= 1
    assert json.loads(cli("models", "show", "policy-assistant@production", "--json").out)["id"] == dpo
    deployments = json.loads(cli("deployments", "list", "--json").out)
    assert any(d["model_id"] == dpo and d["endpoint"].endswith("/v1/chat/completions") for d in deployments)
