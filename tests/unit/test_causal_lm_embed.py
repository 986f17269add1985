"""A causal LM backbone's embedding skips the LM head, yet equals the full model's pooled hidden states,
bare, with LoRA injected in place (tune) and inside a PEFT wrapper (llm training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from modelfab.zoo import build_backbone
from modelfab.zoo.lm.causal import CausalLMBackbone, masked_mean
from modelfab.zoo.testing import write_tiny_hf_model

TEXTS = ["the panel is good", "a broken cell with a crack on the line"]


@pytest.fixture()
def backbone(tmp_path: Path) -> CausalLMBackbone:
    bb = build_backbone("local", path=str(write_tiny_hf_model(tmp_path / "tiny-lm", "lm")), max_length=16)
    assert isinstance(bb, CausalLMBackbone)
    return bb


def full_pooled(bb: CausalLMBackbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = bb.module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return masked_mean(out.hidden_states[-1], batch["attention_mask"])  # (N, D)


def head_calls(bb: CausalLMBackbone) -> list[int]:
    calls: list[int] = []
    head = bb.module.get_output_embeddings()
    head.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_embed_matches_the_full_model_without_running_the_head(backbone: CausalLMBackbone) -> None:
    batch = backbone.preprocess(TEXTS)
    calls = head_calls(backbone)
    with torch.inference_mode():
        emb = backbone.embed(batch)
        assert calls == []
        torch.testing.assert_close(emb, full_pooled(backbone, batch), rtol=0, atol=0)
    assert calls == [1]  # the hook sees the full model's head: the check above is live


def _lora(rank: int = 2) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _perturb_lora(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero: make the adapters matter


@pytest.mark.parametrize("wrap", ["inject", "peft-model"])
def test_embed_keeps_lora_adapters(backbone: CausalLMBackbone, wrap: str) -> None:
    import peft

    batch = backbone.preprocess(TEXTS)
    with torch.inference_mode():
        before = backbone.embed(batch)
    if wrap == "inject":
        peft.inject_adapter_in_model(_lora(), backbone.module)
    else:
        backbone.module = peft.get_peft_model(backbone.module, _lora())
    _perturb_lora(backbone.module)
    assert backbone.body() is not None
    with torch.inference_mode():
        after = backbone.embed(batch)
        torch.testing.assert_close(after, full_pooled(backbone, batch), rtol=0, atol=0)
    assert not torch.allclose(after, before)  # the adapters are in the call


def test_embed_trains_the_adapters(backbone: CausalLMBackbone) -> None:
    import peft

    peft.inject_adapter_in_model(_lora(), backbone.module)
    _perturb_lora(backbone.module)
    backbone.embed(backbone.preprocess(TEXTS)).pow(2).sum().backward()
    grads = [p.grad for n, p in backbone.module.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_features_compute_logits_only_when_asked(backbone: CausalLMBackbone) -> None:
    from modelfab.core.errors import ConfigError

    batch = backbone.preprocess(TEXTS)
    calls = head_calls(backbone)
    with torch.inference_mode():
        some = backbone.features(batch, ["tokens", "pooled"])
        assert calls == [] and set(some) == {"tokens", "pooled"}
        every = backbone.features(batch)
        assert calls == [1] and set(every) == {"tokens", "logits", "pooled"}
    assert every["logits"].shape == (*batch["input_ids"].shape, backbone.module.config.vocab_size)  # (N, T, V)
    torch.testing.assert_close(some["tokens"], every["tokens"], rtol=0, atol=0)
    torch.testing.assert_close(some["pooled"], every["pooled"], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="unknown feature"):
        backbone.features(batch, ["hidden"])
