"""A causal language model (transformers ``AutoModelForCausalLM``) as a backbone.

``embed``: attention-masked mean of the last hidden states (N, D), computed without the LM head;
``features``: the last hidden states (N, T, D) and the next-token ``logits``.  ``rebuild_files``
exports config and tokenizer so a stored copy reloads from the artifact store without the original
files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modelfab.core.errors import ConfigError, DataError
from modelfab.core.optional import import_optional
from modelfab.zoo.base import InputSpec, Source


def import_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return import_optional("transformers", "transformers", "text")


def export_files(model: Any, tokenizer: Any) -> dict[str, bytes]:
    """Config + tokenizer files (no weights) of a transformers model, as name -> bytes."""
    with tempfile.TemporaryDirectory(prefix="modelfab-export-") as tmp:
        model.config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """(N, T, D) states, (N, T) mask -> (N, D) mean over unmasked positions."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class CausalLMBackbone:
    """Backbone protocol over a transformers causal LM and its tokenizer."""

    def __init__(self, name: str, config: dict[str, Any], model: Any, tokenizer: Any, source: Source,
                 max_length: int = 512, languages: tuple[str, ...] = ("en",)):
        if tokenizer is None:
            raise DataError(f"{name}: a causal LM backbone needs a tokenizer")
        self.name = name
        self.config = config
        self.module = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.embed_dim = int(model.config.hidden_size)
        self.input_spec = InputSpec("lm", max_length=max_length, languages=languages)
        self.source = source
        model.eval()

    def preprocess(self, items: Sequence[Any]) -> dict[str, Tensor]:
        """Texts -> ``input_ids`` / ``attention_mask`` (N, T), right-padded and truncated."""
        texts = [str(t) for t in items]
        if not texts:
            raise DataError("empty text batch")
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.input_spec.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _run(self, batch: dict[str, Tensor]) -> Any:
        return self.module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True)

    def body(self) -> Any | None:
        """The transformer body under the LM head (``base_model``), or None when the model has none.

        A PEFT wrapper is looked through; adapters injected into the body stay in the call.
        """
        model = self.module
        unwrap = getattr(model, "get_base_model", None)  # peft.PeftModel
        if callable(unwrap):
            model = unwrap()
        body = getattr(model, "base_model", None)
        return body if isinstance(body, torch.nn.Module) and body is not model else None

    def _last_hidden(self, batch: dict[str, Tensor]) -> Tensor:  # -> (N, T, D)
        """Last hidden states; the LM head (N, T, V logits) is skipped when the body can be called alone
        (for SmolLM2 the head is a fifth of the forward pass's multiply-adds)."""
        body = self.body()
        if body is None:
            return self._run(batch).hidden_states[-1]
        return body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state

    def embed(self, batch: dict[str, Tensor]) -> Tensor:  # -> (N, D)
        """Masked mean of the last hidden states."""
        return masked_mean(self._last_hidden(batch), batch["attention_mask"])

    def features(self, batch: dict[str, Tensor], names: Iterable[str] | None = None) -> dict[str, Tensor]:
        """``tokens`` (N, T, D) last hidden states, ``logits`` (N, T, V), ``pooled`` (N, D); the logits
        (and the LM head's cost) only when ``names`` asks for them or is None."""
        wanted = None if names is None else list(names)
        unknown = [] if wanted is None else [k for k in wanted if k not in ("tokens", "logits", "pooled")]
        if unknown:
            raise ConfigError(f"unknown feature(s) {sorted(unknown)}; known: ['tokens', 'logits', 'pooled']")
        feats: dict[str, Tensor] = {}
        if wanted is None or "logits" in wanted:
            out = self._run(batch)
            hidden, feats["logits"] = out.hidden_states[-1], out.logits
        else:
            hidden = self._last_hidden(batch)
        feats.update(tokens=hidden, pooled=masked_mean(hidden, batch["attention_mask"]))
        return feats if wanted is None else {k: feats[k] for k in wanted}

    def generate(self, prompt: str, max_new_tokens: int = 32) -> str:
        """Greedy completion of ``prompt`` (for smoke checks and demos)."""
        enc = self.tokenizer([prompt], return_tensors="pt")
        with torch.inference_mode():
            out = self.module.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=self.tokenizer.pad_token_id)
        return str(self.tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True))

    def rebuild_files(self) -> dict[str, bytes]:
        return export_files(self.module, self.tokenizer)
