"""Process settings read from the environment (no global mutable config object)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where modelfab keeps its state.

    ``home``: ``MODELFAB_HOME`` (default ``~/.modelfab``).
    ``db_url``: ``MODELFAB_DB`` (default SQLite at ``home/modelfab.db``).
    ``artifacts_url``: ``MODELFAB_ARTIFACTS`` (default ``home/artifacts``; any fsspec URL).
    """

    home: Path
    db_url: str
    artifacts_url: str

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("MODELFAB_HOME", "~/.modelfab")).expanduser().resolve()
        db_url = os.environ.get("MODELFAB_DB") or f"sqlite:///{home / 'modelfab.db'}"
        artifacts = os.environ.get("MODELFAB_ARTIFACTS") or str(home / "artifacts")
        return cls(home=home, db_url=db_url, artifacts_url=artifacts)
