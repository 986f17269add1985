"""A transformers encoder (``AutoModel``: BERT, RoBERTa, XLM-R, ...) with mean pooling as a backbone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from modelfab.core.errors import DataError
from modelfab.zoo.base import InputSpec, Source
from modelfab.zoo.lm.causal import export_files, masked_mean


class HFEncoderBackbone:
    """Texts -> tokenizer -> encoder -> masked mean of the last states (optionally L2-normalised)."""

    def __init__(self, name: str, config: dict[str, Any], model: Any, tokenizer: Any, source: Source,
                 max_length: int = 512, normalize: bool = True):
        if tokenizer is None:
            raise DataError(f"{name}: a text encoder needs a tokenizer in its folder")
        self.name = name
        self.config = config
        self.module = model
        self.tokenizer = tokenizer
        self.normalize = normalize
        self.embed_dim = int(model.config.hidden_size)
        limit = int(getattr(model.config, "max_position_embeddings", max_length) or max_length)
        self.input_spec = InputSpec("text", max_length=min(max_length, limit))
        self.source = source
        model.eval()

    def preprocess(self, items: Sequence[Any]) -> dict[str, Tensor]:
        texts = [str(t) for t in items]
        if not texts:
            raise DataError("empty text batch")
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.input_spec.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if isinstance(v, Tensor)}

    def _tokens(self, batch: dict[str, Tensor]) -> Tensor:
        return self.module(**batch).last_hidden_state  # (N, T, D)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:  # -> (N, D)
        pooled = masked_mean(self._tokens(batch), batch["attention_mask"])
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def features(self, batch: dict[str, Tensor], names: Iterable[str] | None = None) -> dict[str, Tensor]:
        tokens = self._tokens(batch)
        pooled = masked_mean(tokens, batch["attention_mask"])
        feats = {"tokens": tokens, "attention_mask": batch["attention_mask"],
                 "pooled": F.normalize(pooled, dim=-1) if self.normalize else pooled}
        return feats if names is None else {k: feats[k] for k in names}

    def rebuild_files(self) -> dict[str, bytes]:
        return export_files(self.module, self.tokenizer)
