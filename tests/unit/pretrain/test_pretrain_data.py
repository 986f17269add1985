"""Packed memory-mapped shards and the deterministic, cursor-addressed window stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelfab.core.errors import DataError
from modelfab.pretrain.data import TokenStream, build_shards, corpus_files, corpus_sha256, iter_texts
from modelfab.pretrain.tokenizer import train_bpe


def _shards(corpus: Path, tmp_path: Path, shard_tokens: int = 1 << 24):  # type: ignore[no-untyped-def]
    files = corpus_files(corpus)
    tok = train_bpe(iter_texts(files), 300, tmp_path / "tok")
    src = corpus_sha256(files)
    return tok, files, build_shards(iter_texts(files), tok, tmp_path / "shards", src, shard_tokens=shard_tokens)


def test_shards_pack_every_document_with_eos(corpus: Path, tmp_path: Path) -> None:
    tok, files, shards = _shards(corpus, tmp_path, shard_tokens=1000)
    expected = np.concatenate([np.array([*tok.encode(t), tok.eos_id]) for t in iter_texts(files)])
    assert len(shards.arrays) == -(-expected.size // 1000) > 1
    assert all(isinstance(a, np.memmap) and a.dtype == np.uint16 for a in shards.arrays)
    assert np.array_equal(np.concatenate(shards.arrays), expected)
    assert shards.n_tokens == expected.size


def test_shards_reused_when_inputs_match(corpus: Path, tmp_path: Path) -> None:
    tok, files, shards = _shards(corpus, tmp_path)
    first = (tmp_path / "shards" / "shard_00000.bin").stat().st_mtime_ns
    old_hash = corpus_sha256(files)
    build_shards(iter_texts(files), tok, tmp_path / "shards", corpus_sha256(files))
    assert (tmp_path / "shards" / "shard_00000.bin").stat().st_mtime_ns == first
    (corpus / "doc_00.txt").write_text("changed")
    assert corpus_sha256(corpus_files(corpus)) != old_hash
    rebuilt = build_shards(
        iter_texts(corpus_files(corpus)), tok, tmp_path / "shards", corpus_sha256(corpus_files(corpus))
    )
    assert rebuilt.n_tokens < shards.n_tokens


def test_stream_is_deterministic_and_covers_each_window_once_per_epoch(corpus: Path, tmp_path: Path) -> None:
    _, _, shards = _shards(corpus, tmp_path, shard_tokens=700)
    stream = TokenStream(shards, seq_len=16, seed=3)
    n = stream.n_windows
    epoch0 = [tuple(stream.window(p)) for p in range(n)]
    epoch1 = [tuple(stream.window(p)) for p in range(n, 2 * n)]
    every = [tuple(int(t) for t in a[k * 16 : k * 16 + 17]) for a in shards.arrays for k in range((a.size - 1) // 16)]
    assert len(every) == n
    assert sorted(epoch0) == sorted(every) == sorted(epoch1) and epoch0 != epoch1
    assert all(len(w) == 17 for w in epoch0)
    again = TokenStream(shards, seq_len=16, seed=3)
    assert [tuple(again.window(p)) for p in range(n + 5)] == epoch0 + epoch1[:5]
    other = TokenStream(shards, seq_len=16, seed=4)
    assert [tuple(other.window(p)) for p in range(n)] != epoch0
    x, y = stream.batch(5, 3)
    assert x.shape == y.shape == (3, 16)
    assert np.array_equal(x[1].numpy(), np.array(epoch0[6][:-1])) and np.array_equal(
        y[1].numpy(), np.array(epoch0[6][1:])
    )


def test_missing_or_empty_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        corpus_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        corpus_files(tmp_path / "empty")
