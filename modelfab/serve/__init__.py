"""Serving: a FastAPI app hosting registered scenario models with batching, roles and feedback."""

from modelfab.serve.app import create_app
from modelfab.serve.config import ServeSettings

__all__ = ["ServeSettings", "create_app"]
