"""L1 adaptation: continued self-supervised training of an L0 on an industry's unlabeled data."""

from modelfab.adapt.api import AdaptResult, adapt_model, run_dir_for
from modelfab.adapt.config import AdaptConfig
from modelfab.adapt.runner import TrainResult, train

__all__ = ["AdaptConfig", "AdaptResult", "TrainResult", "adapt_model", "run_dir_for", "train"]
