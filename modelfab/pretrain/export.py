"""A trained L0 as a self-contained folder: weights (safetensors), config.json and tokenizer.json.

This is what L1 adaptation and L2 tuning load (``load_pretrained``); no pickles anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.model import Transformer
from modelfab.pretrain.tokenizer import TextTokenizer, load_tokenizer


def export_model(
    model: Transformer,
    tokenizer: TextTokenizer | None,
    out_dir: Path,
    card: dict[str, Any],
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json``, ``card.json`` (and ``tokenizer.json``) to out_dir.

    ``state``: the weights to write instead of ``model.state_dict()`` (the full state gathered from FSDP)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict() if state is None else state
    weights = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt", "arch": "modelfab-l0"})
    (out_dir / "config.json").write_text(json.dumps(model.cfg.model_dump(mode="json"), indent=1))
    (out_dir / "card.json").write_text(json.dumps(card, indent=1, default=str))
    if tokenizer is not None and tokenizer.path.resolve() != (out_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer.path, out_dir / "tokenizer.json")
    return out_dir / "model.safetensors"


def load_pretrained(folder: Path, device: str = "cpu") -> tuple[Transformer, TextTokenizer | None]:
    """Rebuild the model (and its tokenizer when present) from an exported folder."""
    cfg = ModelConfig.model_validate(json.loads((folder / "config.json").read_text()))
    model = Transformer(cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device), strict=True)
    tok = load_tokenizer(folder) if (folder / "tokenizer.json").exists() else None
    return model.to(torch.device(device)), tok
