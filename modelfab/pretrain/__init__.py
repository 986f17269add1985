"""L0 pretraining kit: a Pangu-style decoder-only transformer and its trainer.

Each technique is one config switch (see :class:`ModelConfig`): DSSN, TinyInit, MHA/GQA/MLA,
dense/MoE/MoGE/aux-loss-free routing with switch or EP-group balancing, and MTP.
"""

from __future__ import annotations

from modelfab.pretrain.config import (
    DataConfig,
    ModelConfig,
    MoEConfig,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
    load_run_config,
    parse_run_config,
)
from modelfab.pretrain.export import export_model, load_pretrained
from modelfab.pretrain.model import LMOutput, Transformer
from modelfab.pretrain.run import PretrainResult, prepare_data, run_pretraining
from modelfab.pretrain.trainer import Trainer, TrainResult

__all__ = [
    "DataConfig",
    "LMOutput",
    "MoEConfig",
    "ModelConfig",
    "PretrainResult",
    "RunConfig",
    "TokenizerConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "Transformer",
    "export_model",
    "load_pretrained",
    "load_run_config",
    "parse_run_config",
    "prepare_data",
    "run_pretraining",
]
