"""Screening: anomaly scorers fitted on normal images, a calibrated recall guarantee, the
version of items that need human eyes.  Scorer plug-ins are imported explicitly here."""

from modelfab.screen import embedding_knn, gaussian, knn_memory  # noqa: F401  (register the scorers)
from modelfab.screen.base import SCORERS, FeatureConfig, Scorer, Scores, build_scorer
from modelfab.screen.calibrate import Calibration, calibrate_threshold, defects_needed, recall_lower_bound
from modelfab.screen.embedding_knn import EmbeddingKnnConfig
from modelfab.screen.gaussian import GaussianConfig
from modelfab.screen.knn_memory import KnnMemoryConfig

__all__ = [
    "SCORERS",
    "Calibration",
    "EmbeddingKnnConfig",
    "FeatureConfig",
    "GaussianConfig",
    "KnnMemoryConfig",
    "Scorer",
    "Scores",
    "build_scorer",
    "calibrate_threshold",
    "defects_needed",
    "recall_lower_bound",
]
from modelfab.screen.select import SELECTORS, Pool, Selection, Selector, build_selector  # noqa: F401
