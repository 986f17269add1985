"""Shared CLI helpers: the console, the store, JSON output."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from modelfab.store.store import Store, open_store

console = Console()
if not console.is_terminal:
    console = Console(width=160)  # pipes and logs: wide enough that ids and names are not cut
err_console = Console(stderr=True)

JSON_HELP = "Print machine-readable JSON instead of a table."


def store() -> Store:
    """Open the store configured by the environment (MODELFAB_HOME / MODELFAB_DB)."""
    return open_store()


def print_json(obj: Any) -> None:
    """JSON to stdout, unwrapped (safe for pipes)."""
    print(json.dumps(obj, indent=2, default=str, sort_keys=True))
