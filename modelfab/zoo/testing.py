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


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CHAT_CORPUS = (
    "the panel has a crack . the cell is fine . call the hotline about the broken line .",
    "what is the opening time of the office ? the office opens at nine .",
    "how do i renew a permit ? bring the form and your id to the counter .",
    "the product quality is good . the review is very bad . the camera is ok .",
)


def write_tiny_chat_lm(folder: str | Path, seed: int = 0) -> Path:
    """A tiny Llama causal LM with a byte-level BPE tokenizer and a ChatML chat template.

    Unlike the ``lm`` kind of :func:`write_tiny_hf_model` it round-trips any text (bytes) and
    renders chats like SmolLM2, so SFT / DPO / serving code paths run exactly as on the real model.
    """
    tf = import_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(_CHAT_CORPUS) * 4, trainer)
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                           pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    tf.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder
