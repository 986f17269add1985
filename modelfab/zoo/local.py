"""Backbones from a local path: a Hugging Face model folder or a safetensors checkpoint.

* A folder with ``config.json``: causal LMs (``*ForCausalLM``) become a
  :class:`~modelfab.zoo.lm.causal.CausalLMBackbone`, anything else an encoder with mean pooling
  (:class:`~modelfab.zoo.text.hf_encoder.HFEncoderBackbone`).  Loaded with ``local_files_only``.
* A ``.safetensors`` file written by modelfab (its metadata names the catalog ``builder``; an
  optional ``<file>.json`` card beside it carries the builder config): rebuilt through the catalog.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.zoo.base import Backbone, Source
from modelfab.zoo.catalog import BACKBONES, build_backbone
from modelfab.zoo.lm.causal import CausalLMBackbone, import_transformers
from modelfab.zoo.text.hf_encoder import HFEncoderBackbone

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "tokenizer.model")


@dataclass
class LocalConfig:
    """Options of a backbone loaded from a local path."""

    path: str = ""
    """A Hugging Face model folder (with config.json) or a modelfab safetensors checkpoint."""
    kind: Literal["auto", "text", "lm"] = "auto"
    """For folders: ``lm`` (causal LM), ``text`` (encoder) or ``auto`` (from the architecture)."""
    max_length: int = 512
    """Tokens per text after truncation."""
    pretrained: bool = True
    """Load the folder's weights (False: architecture only; stored weights follow)."""
    rebuild_dir: str | None = None
    """Folder with config + tokenizer files (set by the store when reloading a saved copy)."""

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "text", "lm"):
            raise ConfigError(f"kind: must be auto, text or lm, got {self.kind!r}")
        if not self.path and self.rebuild_dir is None:
            raise ConfigError("path: give a model folder or a .safetensors checkpoint")


def _is_causal(config: Any, kind: str) -> bool:
    if kind != "auto":
        return kind == "lm"
    return any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))


def _load_folder(cfg: LocalConfig) -> Backbone:
    tf = import_transformers()
    folder = Path(cfg.rebuild_dir or cfg.path)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} has no config.json: not a Hugging Face model folder")
    hf_config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    causal = _is_causal(hf_config, cfg.kind)
    auto = tf.AutoModelForCausalLM if causal else tf.AutoModel
    if cfg.pretrained and cfg.rebuild_dir is None:
        model = auto.from_pretrained(str(folder), local_files_only=True)
    else:
        model = auto.from_config(hf_config)
    has_tokenizer = any((folder / f).is_file() for f in _TOKENIZER_FILES)
    tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True) if has_tokenizer else None
    config = asdict(cfg)
    config.update(rebuild_dir=None, kind="lm" if causal else "text")
    source = Source(package="local", version="-", licence="see the model folder",
                    weights=str(Path(cfg.path).name or "stored"), trained_on="unknown (local model)")
    if causal:
        return CausalLMBackbone("local", config, model, tokenizer, source, cfg.max_length, languages=())
    return HFEncoderBackbone("local", config, model, tokenizer, source, cfg.max_length)


def _load_checkpoint(path: Path) -> Backbone:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise DataError(f"{path} is not a readable safetensors file: {exc}") from exc
    card_path = path.with_suffix(path.suffix + ".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    builder = card.get("builder") or meta.get("builder")
    if not builder:
        raise DataError(f"{path}: cannot tell its architecture (no 'builder' in its metadata or a "
                        f"{card_path.name} card); known builders: {', '.join(BACKBONES.names())}")
    if builder == "local":
        raise DataError(f"{path}: a checkpoint of a local model needs its model folder, not just weights")
    config = dict(card.get("config") or {})
    if "pretrained" in config or "pretrained" in _config_fields(builder):
        config["pretrained"] = False
    backbone = build_backbone(builder, **config)
    try:
        result = backbone.module.load_state_dict(load_file(str(path)), strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise DataError(f"stored weights do not fit {builder}: {str(exc).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise DataError(f"{path} does not fit {builder}: missing {result.missing_keys[:5]}, "
                        f"unexpected {result.unexpected_keys[:5]}")
    backbone.module.eval()
    return backbone


def _config_fields(builder: str) -> set[str]:
    cls = BACKBONES.entry(builder).config
    return set(getattr(cls, "__dataclass_fields__", {}))


@BACKBONES.register("local", config=LocalConfig, summary="any local HF model folder or safetensors checkpoint")
def build_local(cfg: LocalConfig) -> Backbone:
    """A backbone from a local folder or checkpoint (see the module docstring)."""
    if cfg.rebuild_dir is not None:
        return _load_folder(cfg)
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise NotFoundError(f"no such model path: {path}")
    if path.is_dir():
        return _load_folder(LocalConfig(**{**asdict(cfg), "path": str(path.resolve())}))
    if path.suffix == ".safetensors":
        return _load_checkpoint(path)
    raise DataError(f"{path}: expected a model folder or a .safetensors file")
