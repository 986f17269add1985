"""Optional dependencies, imported where they are used so the core installs and imports without them."""

from __future__ import annotations

import importlib
from typing import Any

from modelfab.core.errors import MissingExtraError


def import_optional(module: str, package: str, extra: str) -> Any:
    """``import module``, or a :class:`MissingExtraError` naming ``pip install 'modelfab[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package, extra) from None


def faiss(extra: str = "screen") -> Any:
    """The faiss module (package ``faiss-cpu``; in the ``screen`` and ``llm`` extras)."""
    return import_optional("faiss", "faiss-cpu", extra)
