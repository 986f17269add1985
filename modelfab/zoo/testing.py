"""Tiny, randomly initialised Hugging Face models written to disk (for tests, docs and demos).

They exercise the real local-loading path (config.json + safetensors + tokenizer files) in a
fraction of a second, with no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from modelfab.zoo.lm.causal import import_transformers

TINY_WORDS = (
    "the", "a", "an", "is", "was", "good", "bad", "panel", "cell", "crack", "defect", "normal", "line",
    "camera", "hotline", "call", "review", "product", "quality", "dark", "bright", "broken", "fine", "ok",
    "not", "very",
)


def write_tiny_tokenizer(folder: Path) -> None:
    """A WordPiece tokenizer over :data:`TINY_WORDS` (+ specials), saved in ``folder``."""
    tf = import_transformers()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = tf.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))


def write_tiny_hf_model(folder: str | Path, kind: Literal["text", "lm"] = "text", seed: int = 0) -> Path:
    """Write a tiny BERT encoder (``text``) or Llama causal LM (``lm``) with its tokenizer."""
    tf = import_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_size = 5 + len(TINY_WORDS)
    if kind == "text":
        config = tf.BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)
        model = tf.BertModel(config)
    elif kind == "lm":
        config = tf.LlamaConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=1, intermediate_size=32, max_position_embeddings=64,
                                pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=True)
        model = tf.LlamaForCausalLM(config)
    else:
        raise ValueError(f"kind: must be 'text' or 'lm', got {kind!r}")
    model.save_pretrained(str(folder))
    write_tiny_tokenizer(folder)
    return folder
