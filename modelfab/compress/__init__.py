"""Compress: export with parity, INT8, latency profiles and model selection (see docs/compress.md).

Catalogs: :data:`RUNTIMES` (run a registered model with torch or onnxruntime) and
:data:`EXTRACTORS` (derive a child model: ``quantize``, ``distill``, ``prune``, ``elastic``).
"""

from modelfab.compress import distill, elastic, prune  # register the distill, elastic and prune extractors
from modelfab.compress.export import ExportResult, export_model
from modelfab.compress.extract import EXTRACTORS, ExtractResult, QuantizeConfig, extract
from modelfab.compress.parity import deployable
from modelfab.compress.profile import profile_model, stored_profiles
from modelfab.compress.runtimes import RUNTIMES, Predictor, load_predictor
from modelfab.compress.select import BudgetError, Selection, select_model

__all__ = [
    "EXTRACTORS",
    "RUNTIMES",
    "BudgetError",
    "ExportResult",
    "ExtractResult",
    "Predictor",
    "QuantizeConfig",
    "Selection",
    "deployable",
    "distill",
    "elastic",
    "export_model",
    "extract",
    "load_predictor",
    "profile_model",
    "prune",
    "select_model",
    "stored_profiles",
]
