"""Byte-level BPE: trained on the corpus or loaded from a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.pretrain.data import corpus_files, iter_texts
from modelfab.pretrain.tokenizer import EOS, load_tokenizer, train_bpe


def test_train_roundtrip_and_reload(corpus: Path, tmp_path: Path) -> None:
    texts = list(iter_texts(corpus_files(corpus)))
    tok = train_bpe(iter(texts), 320, tmp_path / "tok")
    assert tok.vocab_size == 320
    assert tok.eos_id is not None and tok.tok.id_to_token(tok.eos_id) == EOS
    sample = "def loss_3(key):\n    return  héllo 🙂 \t x\n"  # unseen characters: bytes cover them
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample
    assert len(ids) < len(sample.encode())  # merges compress
    again = load_tokenizer(tmp_path / "tok")
    assert again.encode(sample) == ids and again.sha256 == tok.sha256
    # deterministic training
    assert train_bpe(iter(texts), 320, tmp_path / "tok2").sha256 == tok.sha256


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_tokenizer(tmp_path)
    with pytest.raises(ConfigError, match="vocab_size"):
        train_bpe(iter(["x"]), 100, tmp_path / "t")
