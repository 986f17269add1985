"""``modelfab llm rank``: (being built)."""

from __future__ import annotations

import typer

app = typer.Typer(help="rank tools.", no_args_is_help=True)
