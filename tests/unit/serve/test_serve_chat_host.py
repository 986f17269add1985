"""ChatHost in-process: one copy of the base LM for its LoRA chat L2s, adapter switching, streaming pieces,
prompt budgets and embeddings from a chat model."""

from __future__ import annotations

import time

import peft
import pytest
import torch

from modelfab.llm.models import ContextLengthError, load_base, load_chat_model, register_chat_model
from modelfab.serve.chat_host import ChatHost, split_models
from modelfab.serve.config import ServeSettings
from modelfab.serve.metrics import Metrics
from modelfab.store.schema import Model
from modelfab.store.store import Store
from tests.llm_fixtures import register_tiny_chat

MSGS = [{"role": "user", "content": "how do i renew a permit?"}]


def register_lora(store: Store, name: str, seed: int) -> Model:
    """A LoRA chat L2 over ``tinychat`` with random (non-zero) adapter weights drawn from ``seed``."""
    backbone, base = load_base(store, "tinychat")
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    backbone.module = peft.get_peft_model(backbone.module, cfg)
    return register_chat_model(store, name=name, base=base, backbone=backbone, method="lora", dataset_version=None,
                               config={"method": "lora"}, metrics={})


@pytest.fixture()
def host(store: Store, tmp_path_factory: pytest.TempPathFactory) -> ChatHost:
    register_tiny_chat(store, tmp_path_factory.getbasetemp())
    register_lora(store, "chat-a", 3)
    register_lora(store, "chat-b", 1)
    scenario, plans = split_models(store, ["tinychat", "chat-a", "chat-b"])
    assert scenario == [] and [(p.kind, p.method) for p in plans] == [("chat", "base"), ("chat", "lora"),
                                                                       ("chat", "lora")]
    h = ChatHost(store, plans, ServeSettings(warmup=False, chat_default_max_tokens=8), Metrics())
    h.load()
    return h


def test_one_base_copy_and_adapter_switching(host: ChatHost, store: Store) -> None:
    base, a, b = (host.entries[r] for r in ("tinychat", "chat-a", "chat-b"))
    assert len(host.groups) == 1 and base.group is a.group is b.group
    assert base.chat is not None and a.chat is not None and b.chat is not None
    assert base.chat.module is a.chat.module is b.chat.module  # one module, two adapters on it
    assert sorted(base.group.adapters) == sorted([a.adapter, b.adapter]) and base.adapter is None
    assert 0 < a.own_bytes == b.own_bytes < base.own_bytes / 5  # an adapter costs a fraction of the base
    offline = {r: load_chat_model(store, r) for r in ("tinychat", "chat-a", "chat-b")}
    expected = {r: chat.generate(MSGS, 8).text for r, chat in offline.items()}
    assert len(set(expected.values())) == 3
    for ref in ("chat-a", "chat-b", "tinychat", "chat-b", "chat-a", "chat-a", "tinychat"):
        done = host.generate(host.entries[ref], MSGS, 8, 0.0, 1.0, None, time.perf_counter())
        assert done.text == expected[ref], ref
        assert done.prompt_tokens == len(offline[ref].encode(MSGS))


def test_pieces_arrive_during_generation(host: ChatHost) -> None:
    entry = host.entries["tinychat"]
    seen: list[tuple[str, float]] = []
    started = time.perf_counter()
    done = host.generate(entry, MSGS, 8, 0.0, 1.0, None, started,
                         on_piece=lambda p: seen.append((p, time.perf_counter() - started)))
    assert len(seen) >= 2 and "".join(p for p, _ in seen) == done.text
    assert seen[0][1] <= done.first_token_s + 1e-3 and done.first_token_s < done.total_s
    assert done.completion_tokens == 8 and done.finish_reason == "length"
    assert done.tokens_per_s > 0 and done.queued_s >= 0


def test_budget_and_embeddings(host: ChatHost) -> None:
    entry = host.entries["chat-a"]
    prompt, room = host.budget(entry, MSGS, None)
    assert prompt > 0 and room == 8  # the configured default
    with pytest.raises(ContextLengthError, match=r"prompt is \d+ tokens \+ 8 new tokens, over the context limit"):
        host.budget(entry, [{"role": "user", "content": "word " * 400}], 8)
    with pytest.raises(ContextLengthError, match="over the context limit of 256 tokens"):
        host.budget(entry, [{"role": "user", "content": "word " * 400}], None)
    vec_a, tokens = host.embed(entry, ["the panel has a crack", "hello"])
    vec_base, _ = host.embed(host.entries["tinychat"], ["the panel has a crack", "hello"])
    assert vec_a.shape == (2, 32) and tokens > 2
    assert not torch.allclose(torch.from_numpy(vec_a), torch.from_numpy(vec_base))  # the adapter is active
    with pytest.raises(ContextLengthError, match=r"input\[1\] is \d+ tokens, over the limit of 256"):
        host.embed(entry, ["short", "word " * 400])
