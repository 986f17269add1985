"""SFT (LoRA, full, resume, replay, regression) and DPO on the tiny chat LM, through the API and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from modelfab.llm.dpo import DPOConfig, dpo
from modelfab.llm.lm_eval import preference_accuracy
from modelfab.llm.models import load_chat_model
from modelfab.llm.sft import SFTConfig, sft
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version
from modelfab.store.models import model_card
from modelfab.store.runs import list_runs
from modelfab.store.store import Store
from tests.llm_fixtures import register_tiny_chat

QA = [("how do i renew a permit?", "bring the form to window two"), ("where is the office?", "on main street"),
      ("when are you open?", "nine to five on weekdays"), ("can i pay by card?", "yes, at the front desk")]
GENERAL = ["the cat sat on the mat", "a river flows to the sea", "bread is made from flour",
           "the sun rises in the east", "snow falls in winter", "birds build nests in spring"]
FAST = {"batch_size": 2, "max_length": 64, "lr": 1e-2}


def _dataset(store: Store, name: str, modality: str, texts: list[str], splits: list[str],
             meta: list[dict[str, Any]] | None = None) -> str:
    items = [ItemSpec(key=f"{name}-{i:02d}", content_hash=hashlib.sha256(t.encode()).hexdigest(), text=t,
                      meta=(meta[i] if meta else {})) for i, t in enumerate(texts)]
    spec = VersionSpec(items=items, splits={it.key: s for it, s in zip(items, splits, strict=True)})
    dv, _ = create_version(store, name, modality, spec)
    return f"{name}@{dv.version}"


def _chat(q: str, a: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})


@pytest.fixture()
def lab(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """tinychat L0 + faq (chat: 4 train, 2 val), general (text: 4 train, 2 test), prefs (preference: 4 train)."""
    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    _dataset(store, "faq", "chat", [_chat(q, a) for q, a in QA + QA[:2]], ["train"] * 4 + ["val"] * 2)
    _dataset(store, "general", "text", GENERAL, ["train"] * 4 + ["test"] * 2)
    pairs = [json.dumps({"prompt": [{"role": "user", "content": q}], "chosen": a, "rejected": "purple monkey"})
             for q, a in QA]
    _dataset(store, "prefs", "preference", pairs, ["train"] * 4, meta=[{"synthetic": i % 2 == 0} for i in range(4)])
    return store


def test_sft_lora_with_replay_and_regression(lab: Store) -> None:
    cfg = SFTConfig(max_steps=8, replay_ref="general", replay_ratio=0.2, general_ref="general", **FAST)
    model = sft(lab, "tinychat", "faq", "faq-sft", cfg, log=lambda m: None)
    base = lab.get_model("tinychat")
    m = model.metrics
    assert model.tier == "L2" and model.parent_id == base.id and model.task == "chat"
    assert 0 < model.trainable_params < base.params / 2  # the adapter only
    assert lab.artifacts.local_path(model.weights_digest).stat().st_size < 64_000
    assert m["val_loss"] < m["val_loss_base"]  # it learned the answers (val repeats train items)
    assert (m["task_examples"], m["replay_examples"], m["replay_fraction"]) == (4, 1, 0.2)
    assert m["general_eval"] == "general@1:test"
    assert {"general_nll_base", "general_nll_tuned", "general_nll_change"} <= set(m)
    assert m["global_step"] == 8 and m["train_tokens"] > 0 and m["train_tokens_per_s"] > 0
    assert 0 < m["trainable_fraction"] < 1
    card = model_card(lab, model.id)
    assert card["chat"]["method"] == "lora" and card["training"]["replay"] == "general"
    run = list_runs(lab, kind="llm-sft")[0]
    assert run.status == "succeeded" and run.outputs["model"] == model.id
    chat = load_chat_model(lab, "faq-sft")
    assert chat.base.id == base.id and chat.generate([{"role": "user", "content": QA[0][0]}], 4).completion_tokens


def test_sft_full_resumes_from_checkpoint(lab: Store) -> None:
    first = sft(lab, "tinychat", "faq", "faq-full", SFTConfig(method="full", max_steps=3, **FAST), log=lambda m: None)
    run_dir = Path(model_card(lab, first.id)["training"]["run_dir"])
    assert (run_dir / "checkpoint-3" / "model.safetensors").is_file()
    second = sft(lab, "tinychat", "faq", "faq-full", SFTConfig(method="full", max_steps=6, resume=True, **FAST),
                 log=lambda m: None)
    assert second.metrics["resumed_from_step"] == 3 and second.metrics["global_step"] == 6
    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert model_card(lab, second.id)["chat"]["method"] == "full" and second.trainable_params == second.params
    base, tuned = load_chat_model(lab, "tinychat"), load_chat_model(lab, "faq-full:2")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        assert not torch.allclose(base.module(input_ids=ids).logits, tuned.module(input_ids=ids).logits)


def test_dpo_continues_the_sft_adapter(lab: Store) -> None:
    sft_model = sft(lab, "tinychat", "faq", "faq-sft", SFTConfig(max_steps=4, **FAST), log=lambda m: None)
    model = dpo(lab, "faq-sft", "prefs", "faq-dpo", DPOConfig(max_steps=6, batch_size=2, max_length=64, lr=5e-3),
                log=lambda m: None)
    card = model_card(lab, model.id)
    assert model.parent_id == sft_model.id
    assert card["chat"]["method"] == "lora" and card["chat"]["base"] == lab.get_model("tinychat").id
    assert card["preference_data"] == {"synthetic": 0.5, "pairs": 4}
    assert model.metrics["reward_margin"] > 0 and model.metrics["reward_accuracy"] > 0.5
    policy, reference = load_chat_model(lab, "faq-dpo"), load_chat_model(lab, "faq-sft")
    pairs = [{"prompt": [{"role": "user", "content": q}], "chosen": a, "rejected": "purple monkey"} for q, a in QA]
    result = preference_accuracy(policy.module, policy.tokenizer, pairs, reference.module, max_length=64)
    assert result["reward_accuracy"] > 0.5 and result["reward_margin"] > 0


def test_cli_train_eval_and_bad_input(lab: Store, cli: Any) -> None:
    _dataset(lab, "empty-train", "chat", [_chat("hi", "hello")], ["val"])
    _dataset(lab, "long", "chat", [_chat("word " * 80, "ok")], ["train"])
    bad = {
        ("--base", "tinychat", "--data", "general"): "general@1 is a text dataset; expected chat",
        ("--base", "nope", "--data", "faq"): "nope",
        ("--base", "tinychat", "--data", "empty-train"): "no items in split 'train'",
        ("--base", "tinychat", "--data", "long", "--max-length", "64"): "long-00: sample is",
        ("--base", "tinychat", "--data", "faq", "--method", "half"): "method",
    }
    for args, message in bad.items():
        res = cli("llm", "sft", *args, "--name", "x", "--json")
        assert res.code == 2 and message in res.err and len(res.err.strip().splitlines()) == 1, (args, res.err)
    res = cli("llm", "dpo", "--policy", "tinychat", "--data", "faq", "--name", "x")
    assert res.code == 2 and "expected preference" in res.err

    res = cli("llm", "sft", "--base", "tinychat", "--data", "faq", "--name", "cli-sft", "--max-steps", "2",
              "--batch-size", "2", "--max-length", "64", "--general", "general", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["metrics"]["global_step"] == 2 and "general_nll_change" in out["metrics"]
    res = cli("llm", "eval", "cli-sft", "--general", "general", "--preferences", "prefs", "--split", "all",
              "--reference", "tinychat", "--max-length", "64", "--json")
    assert res.code == 0, res.err
    ev = json.loads(res.out)
    assert ev["pairs"] == 4 and ev["general_samples"] == 6 and ev["synthetic_fraction"] == 0.5
    assert {"preference_accuracy", "reward_accuracy", "general_nll"} <= set(ev)
    res = cli("llm", "eval", "cli-sft", "--preferences", "prefs")  # default split test: empty
    assert res.code == 2 and "no items in split 'test'" in res.err
    res = cli("llm", "eval", "cli-sft", "--general", "general")
    assert res.code == 0 and "general_nll" in res.out
