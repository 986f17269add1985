"""``modelfab llm``: the language-model track (templates, rankings, SFT/DPO, knowledge QA)."""

from __future__ import annotations

import typer

from modelfab.cli import llm_rag, llm_rank, llm_template, llm_train

app = typer.Typer(help="Language models: prompt templates, rankings, SFT/DPO, knowledge QA.", no_args_is_help=True)
app.add_typer(llm_template.app, name="template")
app.add_typer(llm_rank.app, name="rank")
llm_train.register(app)
llm_rag.register(app)
