"""Packed, memory-mapped token shards with a deterministic, resumable order.

``build_shards`` tokenises a text folder (files sorted by path, one ``<|endoftext|>`` between
documents) into flat ``shard_NNNNN.bin`` files (uint16, or uint32 for vocabularies over 65,535)
plus ``meta.json``.  ``TokenStream`` cuts each shard into non-overlapping windows of
``seq_len + 1`` tokens and visits them in a seeded permutation per epoch.  The position in that
stream is one integer, the *cursor* (windows consumed over all ranks), so a run resumed from a
checkpoint reads exactly the windows the uninterrupted run would have read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelfab.core.errors import DataError
from modelfab.pretrain.tokenizer import TextTokenizer

SHARD_TOKENS = 1 << 24


def corpus_files(corpus: Path, glob: str = "**/*") -> list[Path]:
    """The text files of a corpus (a folder, read recursively and sorted, or one file)."""
    if corpus.is_file():
        return [corpus]
    if not corpus.is_dir():
        raise DataError(f"corpus {corpus} does not exist")
    files = sorted(p for p in corpus.glob(glob) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"corpus {corpus} has no files matching {glob!r}")
    return files


def iter_texts(files: list[Path], max_bytes: int | None = None) -> Iterator[str]:
    """Documents as text (invalid UTF-8 replaced), stopping once ``max_bytes`` have been read."""
    read = 0
    for path in files:
        data = path.read_bytes()
        if b"\x00" in data[:1024]:
            continue  # binary file
        if max_bytes is not None:
            data = data[: max_bytes - read]
        read += len(data)
        yield data.decode("utf-8", errors="replace")
        if max_bytes is not None and read >= max_bytes:
            return


def corpus_sha256(files: list[Path], max_bytes: int | None = None) -> str:
    """Hash of the corpus text as read (paths excluded, order included)."""
    h = hashlib.sha256()
    for text in iter_texts(files, max_bytes):
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()


def build_shards(
    texts: Iterator[str],
    tokenizer: TextTokenizer,
    out_dir: Path,
    source_sha256: str,
    shard_tokens: int = SHARD_TOKENS,
) -> TokenShards:
    """Tokenise ``texts`` into shards under ``out_dir``; reuses shards built from the same inputs."""
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("source_sha256") == source_sha256 and meta.get("tokenizer_sha256") == tokenizer.sha256:
            return TokenShards(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.uint32
    shards: list[dict[str, Any]] = []
    buf: list[np.ndarray] = []
    held = 0

    def flush() -> None:
        nonlocal buf, held
        if not held:
            return
        name = f"shard_{len(shards):05d}.bin"
        arr = np.concatenate(buf).astype(dtype)
        tmp = out_dir / f".{name}.tmp"
        arr.tofile(tmp)
        os.replace(tmp, out_dir / name)
        shards.append({"file": name, "tokens": int(arr.size)})
        buf, held = [], 0

    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    for text in texts:
        ids = np.asarray(tokenizer.encode(text) + eos, dtype=np.int64)
        while ids.size:
            take = min(shard_tokens - held, ids.size)
            buf.append(ids[:take])
            held += take
            ids = ids[take:]
            if held == shard_tokens:
                flush()
    flush()
    if not shards:
        raise DataError("the corpus produced no tokens")
    meta = {
        "dtype": np.dtype(dtype).name,
        "shards": shards,
        "n_tokens": sum(s["tokens"] for s in shards),
        "source_sha256": source_sha256,
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
    }
    tmp_meta = out_dir / ".meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_path)
    return TokenShards(out_dir)


class TokenShards:
    """Read-only memory maps of a shard folder."""

    def __init__(self, folder: Path) -> None:
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{folder} holds no token shards (meta.json missing)")
        self.folder = folder
        self.meta = json.loads(meta_path.read_text())
        self.arrays = [np.memmap(folder / s["file"], dtype=self.meta["dtype"], mode="r") for s in self.meta["shards"]]

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])


class TokenStream:
    """Windows of ``seq_len + 1`` tokens in a seeded per-epoch permutation, addressed by a cursor."""

    def __init__(self, shards: TokenShards, seq_len: int, seed: int) -> None:
        self.shards, self.seq_len, self.seed = shards, seq_len, seed
        per_shard = np.array([(a.size - 1) // seq_len for a in shards.arrays], dtype=np.int64)
        self.n_windows = int(per_shard.sum())
        if self.n_windows < 1:
            raise DataError(f"corpus has {shards.n_tokens} tokens: fewer than one window of {seq_len + 1}")
        self._starts = np.concatenate(([0], np.cumsum(per_shard)))
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return self._perm

    def window(self, position: int) -> np.ndarray:
        """The ``position``-th window of the infinite stream: seq_len + 1 tokens."""
        epoch, offset = divmod(position, self.n_windows)
        wid = int(self._permutation(epoch)[offset])
        shard = int(np.searchsorted(self._starts, wid, side="right") - 1)
        start = (wid - int(self._starts[shard])) * self.seq_len
        return np.asarray(self.shards.arrays[shard][start : start + self.seq_len + 1], dtype=np.int64)

    def batch(self, cursor: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, each (size, seq_len), from windows cursor .. cursor+size-1."""
        rows = torch.from_numpy(np.stack([self.window(cursor + i) for i in range(size)]))
        return rows[:, :-1], rows[:, 1:]
