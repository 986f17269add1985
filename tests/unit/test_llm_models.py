"""Chat models in the registry: generation, streaming, context limits, LoRA adapters round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelfab.llm.models import ContextLengthError, load_base, load_chat_model, register_chat_model
from modelfab.store.store import Store
from tests.llm_fixtures import register_tiny_chat

MSGS = [{"role": "user", "content": "how do i renew a permit?"}]


def test_generate_stream_and_limits(store: Store, tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    chat = load_chat_model(store, "tinychat")
    gen = chat.generate(MSGS, max_new_tokens=6)
    assert gen.completion_tokens <= 6 and gen.prompt_tokens > 0 and gen.total_s >= gen.first_token_s > 0
    assert "".join(chat.stream(MSGS, max_new_tokens=6)) == gen.text  # greedy: same text both ways
    assert chat.render(MSGS).endswith("<|im_start|>assistant\n")
    with pytest.raises(ContextLengthError, match="over the context limit"):
        chat.encode([{"role": "user", "content": "word " * 400}], max_new_tokens=8)
    assert chat.response_logprob(MSGS, "bring the form") < 0


def test_lora_adapter_round_trip(store: Store, tmp_path_factory: pytest.TempPathFactory) -> None:
    import peft

    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    backbone, base = load_base(store, "tinychat")
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    backbone.module = peft.get_peft_model(backbone.module, cfg)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        expected = backbone.module(input_ids=ids).logits
    l2 = register_chat_model(store, name="tiny-sft", base=base, backbone=backbone, method="lora",
                             dataset_version=None, config={"method": "lora"}, metrics={})
    assert l2.tier == "L2" and l2.parent_id == base.id and 0 < l2.trainable_params < base.params
    loaded = load_chat_model(store, "tiny-sft")
    with torch.inference_mode():
        got = loaded.module(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-6)
    assert loaded.base.id == base.id


def test_not_a_language_model(store: Store, tmp_path: Path) -> None:
    from modelfab.core.errors import ModelfabError

    with pytest.raises(ModelfabError):
        load_chat_model(store, "no-such-model")
