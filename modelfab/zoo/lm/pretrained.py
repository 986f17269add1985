"""An L0 trained by ``modelfab pretrain`` (:class:`modelfab.pretrain.model.Transformer`) as a backbone.

``config``: the pretrain model config (``ModelConfig`` fields, flat) plus ``max_length``,
``trained_on`` and ``rebuild_dir``.  ``embed``: the final-norm hidden states mean-pooled over real
tokens (N, D); ``features``: ``hidden`` (N, T, D) and ``pooled`` (N, D).  Texts are right-padded,
so causal attention never lets a real token see a pad.  ``rebuild_files`` carries ``tokenizer.json``
so a stored copy reloads from the artifact store alone.  Built without ``rebuild_dir`` (the catalog
default) it is a randomly initialised model over a plain byte-level tokenizer.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from modelfab.core.errors import ConfigError, DataError
from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.model import Transformer
from modelfab.pretrain.tokenizer import TextTokenizer, train_bpe
from modelfab.zoo.base import InputSpec, Source
from modelfab.zoo.catalog import BACKBONES
from modelfab.zoo.lm.causal import masked_mean

BUILDER = "modelfab-lm"
_EXTRA_FIELDS = ("max_length", "trained_on", "rebuild_dir")


def _copier(value: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(value)


def _config_class() -> type:
    """A dataclass with every ``ModelConfig`` field (its defaults) plus the builder's own options."""
    defaults = ModelConfig().model_dump(mode="json")
    fields: list[tuple[str, Any, Any]] = []
    for key, value in defaults.items():
        if isinstance(value, dict | list):
            fields.append((key, Any, dataclasses.field(default_factory=_copier(value))))
        else:
            fields.append((key, Any, dataclasses.field(default=value)))
    fields += [
        ("max_length", int, dataclasses.field(default=256)),
        ("trained_on", str, dataclasses.field(default="")),
        ("rebuild_dir", Any, dataclasses.field(default=None)),
    ]

    def post_init(self: Any) -> None:
        if not 1 <= self.max_length <= 65536:
            raise ConfigError(f"max_length: must be within 1..65536, got {self.max_length}")
        model_config(dataclasses.asdict(self))

    return dataclasses.make_dataclass("PretrainedLMConfig", fields, namespace={"__post_init__": post_init})


PretrainedLMConfig = _config_class()


def model_config(config: dict[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` inside a builder config (invalid values -> ConfigError naming the field)."""
    data = {k: v for k, v in config.items() if k not in _EXTRA_FIELDS}
    try:
        return ModelConfig.model_validate(data)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors) and errors():
            first = errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(f"{loc or 'model'}: {first.get('msg', exc)}") from None
        raise ConfigError(f"model: {exc}") from None


class PretrainedLMBackbone:
    """Backbone protocol over a pretrain ``Transformer`` and its byte-level BPE tokenizer."""

    def __init__(self, config: dict[str, Any], model: Transformer, tokenizer_json: bytes, source: Source,
                 max_length: int = 256) -> None:
        self.name = BUILDER
        self.config = config
        self.module: nn.Module = model
        self._tokenizer_json = tokenizer_json
        with tempfile.TemporaryDirectory(prefix="modelfab-tok-") as tmp:
            path = Path(tmp) / "tokenizer.json"
            path.write_bytes(tokenizer_json)
            self.tokenizer = TextTokenizer(path)
        if self.tokenizer.vocab_size > model.cfg.vocab_size:
            raise DataError(f"{BUILDER}: the tokenizer has {self.tokenizer.vocab_size} tokens but the model "
                            f"only {model.cfg.vocab_size}")
        self.pad_id = self.tokenizer.eos_id if self.tokenizer.eos_id is not None else 0
        self.embed_dim = int(model.cfg.d_model)
        self.input_spec = InputSpec("lm", max_length=max_length)
        self.source = source
        model.eval()

    def preprocess(self, items: Sequence[Any]) -> dict[str, Tensor]:
        """Texts -> ``input_ids`` / ``attention_mask`` (N, T), right-padded and truncated."""
        texts = [str(t) for t in items]
        if not texts:
            raise DataError("empty text batch")
        limit = int(self.input_spec.max_length or 256)
        ids = [seq[:limit] or [self.pad_id] for seq in self.tokenizer.encode_batch(texts)]  # empty -> one pad
        width = max(len(seq) for seq in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def hidden(self, batch: dict[str, Tensor]) -> Tensor:
        """Final-norm hidden states (N, T, D) (what the LM head reads)."""
        model = cast(Transformer, self.module)  # LoRA is injected in place: still the Transformer
        hidden: Tensor = model.norm_f(model.trunk(batch["input_ids"]))
        return hidden

    def embed(self, batch: dict[str, Tensor]) -> Tensor:  # -> (N, D)
        return masked_mean(self.hidden(batch), batch["attention_mask"])

    def features(self, batch: dict[str, Tensor], names: Iterable[str] | None = None) -> dict[str, Tensor]:
        """``hidden`` (N, T, D) final states and ``pooled`` (N, D)."""
        hidden = self.hidden(batch)
        feats = {"hidden": hidden, "pooled": masked_mean(hidden, batch["attention_mask"])}
        return feats if names is None else {k: feats[k] for k in names}

    def rebuild_files(self) -> dict[str, bytes]:
        return {"tokenizer.json": self._tokenizer_json}


def _source(trained_on: str, weights: str) -> Source:
    from importlib import metadata

    try:
        version = metadata.version("modelfab")
    except metadata.PackageNotFoundError:
        version = "dev"
    return Source(package="modelfab", version=version, licence="user", weights=weights,
                  trained_on=trained_on or "the user's corpus (modelfab pretrain)")


def _byte_tokenizer() -> bytes:
    """A byte-level BPE with no merges (256 bytes + end of text): the catalog default's tokenizer."""
    with tempfile.TemporaryDirectory(prefix="modelfab-tok-") as tmp:
        return train_bpe([""], 257, Path(tmp)).path.read_bytes()


@BACKBONES.register(BUILDER, config=PretrainedLMConfig,
                    summary="an L0 trained by `modelfab pretrain` (lm; random init unless reloaded)")
def build_pretrained_lm(cfg: Any = None) -> PretrainedLMBackbone:
    """A pretrain ``Transformer`` with its tokenizer (from ``rebuild_dir``, else a byte-level one)."""
    cfg = cfg if cfg is not None else PretrainedLMConfig()
    config = dataclasses.asdict(cfg)
    model = Transformer(model_config(config))
    if cfg.rebuild_dir is not None:
        tok_file = Path(str(cfg.rebuild_dir)) / "tokenizer.json"
        if not tok_file.is_file():
            raise DataError(f"{BUILDER}: no tokenizer.json in {cfg.rebuild_dir}")
        tokenizer_json = tok_file.read_bytes()
    else:
        tokenizer_json = _byte_tokenizer()
    config["rebuild_dir"] = None
    source = _source(cfg.trained_on, "stored" if cfg.rebuild_dir is not None else "random init")
    return PretrainedLMBackbone(config, model, tokenizer_json, source, cfg.max_length)


def from_exported(folder: Path, *, max_length: int = 256, trained_on: str = "") -> PretrainedLMBackbone:
    """The backbone of a folder written by :func:`modelfab.pretrain.export.export_model`
    (``config.json``, ``model.safetensors``, ``tokenizer.json``)."""
    from modelfab.pretrain.export import load_pretrained

    tok_file = folder / "tokenizer.json"
    if not tok_file.is_file():
        raise DataError(f"{folder}: no tokenizer.json; a text backbone needs the run's tokenizer")
    model, _ = load_pretrained(folder)
    config = {**json.loads((folder / "config.json").read_text()), "max_length": max_length,
              "trained_on": trained_on, "rebuild_dir": None}
    model_config(config)  # validates
    return PretrainedLMBackbone(config, model, tok_file.read_bytes(), _source(trained_on, "model.safetensors"),
                                max_length)
