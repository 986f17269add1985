"""Regression and preference evaluation on the tiny chat LM, with hand-checkable properties."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from modelfab.core.errors import DataError
from modelfab.llm.lm_eval import general_nll, preference_accuracy, regression_change, regression_report
from modelfab.llm.samples import encode_chat
from modelfab.llm.sft import replay_draw
from modelfab.zoo.lm.causal import import_transformers
from tests.llm_fixtures import tiny_chat_dir

PROMPT = [{"role": "user", "content": "how do i renew a permit?"}]
ANSWER = "bring the blue form to window two"
NOISE = "zq xv kkj wpl qqz vvx"


def _tiny(root: Path) -> tuple[Any, Any]:
    tf = import_transformers()
    folder = tiny_chat_dir(root)
    return tf.AutoModelForCausalLM.from_pretrained(str(folder)), tf.AutoTokenizer.from_pretrained(str(folder))


def _overfit(module: Any, tokenizer: Any, messages: list[dict[str, str]], steps: int = 40) -> None:
    """Plain next-token training on one chat until the model has memorised it."""
    ids, _ = encode_chat(tokenizer, messages)
    batch = torch.tensor([ids])  # (1, T)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.train()
    for _ in range(steps):
        loss = module(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """(base, overfit on PROMPT -> ANSWER, tokenizer)."""
    base, tok = _tiny(tmp_path_factory.getbasetemp())
    tuned = copy.deepcopy(base)
    torch.manual_seed(0)
    _overfit(tuned, tok, [*PROMPT, {"role": "assistant", "content": ANSWER}])
    return base, tuned, tok


def test_encode_chat_masks_assistant_turns(models: tuple[Any, Any, Any]) -> None:
    _, _, tok = models
    chat = [*PROMPT, {"role": "assistant", "content": "first"}, {"role": "user", "content": "and then?"},
            {"role": "assistant", "content": "second"}]
    ids, mask = encode_chat(tok, chat)
    assert len(ids) == len(mask)
    learned = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert learned == "first<|im_end|>\nsecond<|im_end|>\n"
    ids, mask = encode_chat(tok, chat, last_only=True)
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "second<|im_end|>\n"


def test_nll_lower_on_memorised_text(models: tuple[Any, Any, Any]) -> None:
    base, tuned, tok = models
    seen = [[*PROMPT, {"role": "assistant", "content": ANSWER}]]
    assert general_nll(tuned, tok, seen, 64) < general_nll(base, tok, seen, 64) - 0.5
    report = regression_report(base, tuned, tok, seen, 64)
    assert set(report) == {"general_nll_base", "general_nll_tuned", "general_nll_change"}
    assert report["general_nll_change"] < 0  # the tuned model got better on what it memorised
    assert report["general_nll_change"] == pytest.approx(report["general_nll_tuned"] / report["general_nll_base"] - 1,
                                                         abs=1e-5)
    # plain texts are scored too; the empty list is an error, not a silent zero
    assert general_nll(base, tok, ["the cat sat on the mat"], 64) > 0
    with pytest.raises(DataError):
        general_nll(base, tok, [], 64)


def test_regression_change_arithmetic() -> None:
    assert regression_change(2.0, 2.2)["general_nll_change"] == pytest.approx(0.1)
    assert regression_change(2.0, 1.5)["general_nll_change"] == pytest.approx(-0.25)


def test_preference_accuracy_follows_memorised_answer(models: tuple[Any, Any, Any]) -> None:
    base, tuned, tok = models
    right = [{"prompt": PROMPT, "chosen": ANSWER, "rejected": NOISE}] * 2
    wrong = [{"prompt": PROMPT, "chosen": NOISE, "rejected": ANSWER}] * 2
    assert preference_accuracy(tuned, tok, right, max_length=64)["preference_accuracy"] == 1.0
    assert preference_accuracy(tuned, tok, wrong, max_length=64)["preference_accuracy"] == 0.0
    with_ref = preference_accuracy(tuned, tok, right, reference_module=base, max_length=64)
    assert with_ref["reward_accuracy"] == 1.0 and with_ref["reward_margin"] > 0 and with_ref["pairs"] == 2
    swapped = preference_accuracy(tuned, tok, wrong, reference_module=base, max_length=64)
    assert swapped["reward_accuracy"] == 0.0 and swapped["reward_margin"] == pytest.approx(-with_ref["reward_margin"])
    # a model against itself as reference has zero margins: no pair counts as won
    same = preference_accuracy(base, tok, right, reference_module=base, max_length=64)
    assert same["reward_accuracy"] == 0.0 and same["reward_margin"] == pytest.approx(0.0, abs=1e-4)


def test_replay_draw_fraction() -> None:
    pool = list(range(100))
    drawn = replay_draw(pool, n_task=8, ratio=0.2, seed=1)
    assert len(drawn) == 2 and len(set(drawn)) == 2  # 2 / (8 + 2) = 0.2
    assert drawn == replay_draw(pool, n_task=8, ratio=0.2, seed=1)  # seeded
    short = replay_draw([7, 8, 9], n_task=8, ratio=0.5, seed=0)
    assert len(short) == 8 and set(short) == {7, 8, 9}  # repeats only when the pool is short
