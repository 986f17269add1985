"""Helpers of the pretrain tests: a small generated corpus and a tiny run config."""

from __future__ import annotations

import random
from pathlib import Path

from modelfab.pretrain.config import RunConfig, parse_run_config

WORDS = [
    "the",
    "a",
    "model",
    "token",
    "layer",
    "expert",
    "router",
    "norm",
    "loss",
    "step",
    "shard",
    "cache",
    "head",
    "query",
    "key",
    "value",
]


def write_corpus(folder: Path, n_files: int = 4, lines: int = 150, seed: int = 0) -> Path:
    """Files of templated sentences (learnable structure, deterministic)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        rows = []
        for j in range(lines):
            a, b, c = rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS)
            rows.append(f"def {a}_{j % 7}({b}):\n    return {c} + {j % 10}  # {a} {b} é\n")
        (folder / f"doc_{i:02d}.txt").write_text("".join(rows))
    return folder


def tiny_run(out_dir: Path, corpus: Path, model: dict[str, object] | None = None, **train: object) -> RunConfig:
    raw = {
        "name": "tiny",
        "out_dir": str(out_dir),
        "data": {"corpus": str(corpus), "tokenizer": {"vocab_size": 300}},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, **(model or {})},
        "train": {"seq_len": 32, "micro_batch": 4, "max_steps": 12, "warmup_steps": 2, "plots": False, **train},
    }
    return parse_run_config(raw)
