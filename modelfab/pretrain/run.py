"""One pretraining run from a :class:`RunConfig`: tokenizer -> shards -> trainer -> exported model.

Under torchrun, rank 0 trains the tokenizer and writes the shards while the other ranks wait.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfab.core.errors import DataError
from modelfab.pretrain.config import DataConfig, RunConfig
from modelfab.pretrain.data import (
    TokenShards,
    TokenStream,
    build_shards,
    corpus_files,
    corpus_sha256,
    iter_texts,
)
from modelfab.pretrain.distributed import DistInfo, barrier, init_distributed
from modelfab.pretrain.export import export_model
from modelfab.pretrain.tokenizer import TextTokenizer, load_tokenizer, train_bpe
from modelfab.pretrain.trainer import Trainer, TrainResult, resolve_device


@dataclass
class PretrainResult:
    train: TrainResult
    model_dir: Path  # exported weights + config + tokenizer
    weights: Path
    card: dict[str, Any]


def documents(data: DataConfig) -> tuple[Callable[[], Iterator[str]], str]:
    """A re-iterable source of documents and its content hash (a folder, or a store dataset version)."""
    if data.corpus is not None:
        files = corpus_files(data.corpus, data.glob)
        return (lambda: iter_texts(files, data.max_bytes)), corpus_sha256(files, data.max_bytes)
    from modelfab.store import open_store

    rows = open_store().version_items(str(data.dataset))
    texts = [r.text for r in rows if r.text]
    if not texts:
        raise DataError(f"dataset {data.dataset} has no text items")
    if data.max_bytes is not None:
        texts = list(_truncate(texts, data.max_bytes))
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return (lambda: iter(texts)), h.hexdigest()


def _truncate(texts: list[str], max_bytes: int) -> Iterator[str]:
    used = 0
    for t in texts:
        b = t.encode()[: max_bytes - used]
        used += len(b)
        yield b.decode(errors="ignore")
        if used >= max_bytes:
            return


def prepare_data(cfg: RunConfig, info: DistInfo | None = None) -> tuple[TextTokenizer, TokenShards, str]:
    """The tokenizer, the token shards and the corpus hash (built once, reused when inputs match)."""
    info = info or DistInfo()
    data = cfg.data
    texts, source = documents(data)
    tok_dir, shard_dir = cfg.out_dir / "tokenizer", cfg.out_dir / "shards"
    if info.is_main:
        tok = _tokenizer(cfg, texts, source, tok_dir)
        build_shards(texts(), tok, shard_dir, source)
    barrier(info)
    if not info.is_main:
        tok = load_tokenizer(data.tokenizer.path, tok_dir) if data.tokenizer.path else load_tokenizer(tok_dir)
    return tok, TokenShards(shard_dir), source


def _tokenizer(cfg: RunConfig, texts: Callable[[], Iterator[str]], source: str, tok_dir: Path) -> TextTokenizer:
    spec = cfg.data.tokenizer
    if spec.path is not None:
        return load_tokenizer(spec.path, tok_dir)  # tok_dir: where a GGUF's tokenizer is rebuilt
    stamp = {"source_sha256": source, "vocab_size": spec.vocab_size}
    stamp_path = tok_dir / "source.json"
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return load_tokenizer(tok_dir)
    tok = train_bpe(texts(), spec.vocab_size, tok_dir)
    stamp_path.write_text(json.dumps(stamp))
    return tok


def run_pretraining(cfg: RunConfig, stop_after: int | None = None) -> PretrainResult:
    """Train (resuming from the run folder's latest checkpoint) and export the model."""
    info = init_distributed(resolve_device(cfg.train.device))
    tok, shards, source = prepare_data(cfg, info)
    model_cfg = cfg.model.model_copy(update={"vocab_size": tok.vocab_size})
    stream = TokenStream(shards, cfg.train.seq_len, cfg.train.seed)
    extra = {"corpus_sha256": source, "tokenizer_sha256": tok.sha256}
    trainer = Trainer(model_cfg, cfg.train, stream, cfg.out_dir, info, extra_state=extra)
    result = trainer.run(stop_after)
    card = {
        "name": cfg.name,
        "tier": "L0",
        "task": "lm",
        "config": cfg.model_dump(mode="json"),
        "model_config": model_cfg.model_dump(mode="json"),
        "corpus_sha256": source,
        "corpus_tokens": shards.n_tokens,
        "tokenizer_sha256": tok.sha256,
        "steps": result.steps,
        "tokens_seen": result.tokens,
        "final_loss": result.final_loss,
        "params": result.params,
        "active_params": result.active_params,
        "world_size": info.world_size,
    }
    model_dir = cfg.out_dir / "model"
    weights = model_dir / "model.safetensors"
    full, _ = trainer.full_state()  # a collective under FSDP (gathers the shards to rank 0)
    if info.is_main:
        weights = export_model(trainer.model, tok, model_dir, card, state=full)
    barrier(info)
    return PretrainResult(result, model_dir, weights, card)
