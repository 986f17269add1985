"""Workflows: YAML pipelines of catalog steps, cached by input hash, resumable, local or on Ray."""

from modelfab.flow.engine import RunSummary, approve_step, cancel_run, execute_step, resume_run, run_pipeline
from modelfab.flow.executors import EXECUTORS
from modelfab.flow.spec import load_spec, load_spec_text
from modelfab.flow.steps import STEPS
from modelfab.flow.validate import PipelinePlan, validate

__all__ = [
    "EXECUTORS",
    "STEPS",
    "PipelinePlan",
    "RunSummary",
    "approve_step",
    "cancel_run",
    "execute_step",
    "load_spec",
    "load_spec_text",
    "resume_run",
    "run_pipeline",
    "validate",
]
