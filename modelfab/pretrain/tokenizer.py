"""Byte-level BPE tokenizers: train one on the user's corpus, or load tokenizer.json from a folder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from modelfab.core.errors import ConfigError, NotFoundError

EOS = "<|endoftext|>"
_EOS_CANDIDATES = (EOS, "</s>", "<|im_end|>", "<eos>")


class TextTokenizer:
    """A thin wrapper around ``tokenizers.Tokenizer`` with the end-of-document id and a content hash."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.path = path
        self.tok = Tokenizer.from_file(str(path))
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        ids = [self.tok.token_to_id(t) for t in _EOS_CANDIDATES]
        self.eos_id: int | None = next((i for i in ids if i is not None), None)

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=False))


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: Path) -> TextTokenizer:
    """Train a byte-level BPE (256 byte symbols + merges + ``<|endoftext|>``) and save tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ConfigError(f"data.tokenizer.vocab_size: must be >= 257 for a byte-level BPE, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    tmp = out_dir / ".tokenizer.json.tmp"
    tok.save(str(tmp))
    tmp.replace(path)
    return TextTokenizer(path)


def load_tokenizer(path: Path) -> TextTokenizer:
    """Load ``tokenizer.json`` from a file or a model directory (e.g. SmolLM2's)."""
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise NotFoundError(f"no tokenizer.json at {path}")
    return TextTokenizer(file)
