"""Shared language-model fixtures: a tiny ChatML causal LM on disk and registered as an L0."""

from __future__ import annotations

from pathlib import Path

from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.zoo.registry import register_foundation
from modelfab.zoo.testing import write_tiny_chat_lm

_CACHE: dict[str, Path] = {}


def tiny_chat_dir(root: Path) -> Path:
    """The tiny chat LM folder (written once per test session under ``root``)."""
    if "dir" not in _CACHE or not (_CACHE["dir"] / "config.json").is_file():
        _CACHE["dir"] = write_tiny_chat_lm(root / "tiny-chat-lm")
    return _CACHE["dir"]


def register_tiny_chat(store: Store, root: Path, name: str = "tinychat") -> Model:
    """Register the tiny chat LM in ``store`` as L0 ``name`` (builder ``local``)."""
    model, _ = register_foundation(store, "local", path=str(tiny_chat_dir(root)), name=name)
    return model
