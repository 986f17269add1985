"""L2 scenario models: few-shot tuning (probe, LoRA, partial, full), loading, strategy pool."""

from modelfab.tune.api import TuneResult, tune
from modelfab.tune.config import TuneConfig
from modelfab.tune.load import ScenarioModel, load_scenario
from modelfab.tune.methods import METHODS

__all__ = ["METHODS", "ScenarioModel", "TuneConfig", "TuneResult", "load_scenario", "tune"]
