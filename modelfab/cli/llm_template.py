"""``modelfab llm template``: (being built)."""

from __future__ import annotations

import typer

app = typer.Typer(help="template tools.", no_args_is_help=True)
