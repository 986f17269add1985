"""The step catalog. Importing this package registers the built-in steps."""

from modelfab.flow.steps import data_steps, gates, llm_steps, model_steps, screen_step, traffic
from modelfab.flow.steps.base import STEPS, Step, StepContext, StepParams, StepWaiting, code_hash, register

__all__ = [
    "STEPS",
    "Step",
    "StepContext",
    "StepParams",
    "StepWaiting",
    "code_hash",
    "data_steps",
    "gates",
    "llm_steps",
    "model_steps",
    "register",
    "screen_step",
    "traffic",
]
