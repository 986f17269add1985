"""``modelfab llm template preview|render``: SFT datasets from Jinja2 prompt templates."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store
from modelfab.store.datasets import version_items

if TYPE_CHECKING:
    from modelfab.llm.templates import Validation

app = typer.Typer(help="Prompt templates: preview rendered samples, render SFT datasets.", no_args_is_help=True)

_ROWS = "A CSV/JSONL table: one sample per row, columns are the template variables."
_DOCS = "A folder of .md/.txt documents: one sample per file (variables document, title, path)."
_MAX_SHOWN = 20


def _problems_table(check: Validation) -> Table:
    table = Table(title=f"problems ({len(check.problems)} of {check.rows} rows)")
    for col in ("row", "kind", "problem"):
        table.add_column(col)
    for p in check.problems[:_MAX_SHOWN]:
        table.add_row(p.where, p.kind, Text(p.message))
    if len(check.problems) > _MAX_SHOWN:
        table.add_row("...", "", f"and {len(check.problems) - _MAX_SHOWN} more (--json lists all)")
    return table


@app.command("preview")
def preview_cmd(
    template: Path = typer.Argument(..., help="Template file (YAML or JSON: system, user, assistant)."),
    rows: Path | None = typer.Option(None, "--rows", help=_ROWS),
    docs: Path | None = typer.Option(None, "--docs", help=_DOCS),
    model: str | None = typer.Option(None, "--model", help="Causal LM whose chat template counts tokens."),
    n: int = typer.Option(3, "-n", help="Rendered samples to show."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Flag samples longer than this."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show the first N rendered samples and every validation problem (writes nothing)."""
    from modelfab.llm.templates import preview  # jinja2: the llm extra

    check = preview(store(), template, rows=rows, docs=docs, model=model, max_tokens=max_tokens)
    shown = check.samples[: max(n, 0)]
    if as_json:
        print_json({**check.as_dict(), "samples": [s.as_dict() for s in shown]})
        return
    for s in shown:
        console.print(Panel(Text(s.rendered), title=f"{s.row.where} ({s.row.key})", subtitle=f"{s.tokens} tokens",
                            title_align="left"))
    if not check.exact_tokens:
        console.print("[yellow]token counts are estimates (whitespace words); pass --model for exact counts[/]")
    if check.problems:
        console.print(_problems_table(check))
    limit = f", limit {check.limit} ({check.limit_reason})" if check.limit else ""
    console.print(f"[bold]{check.template}[/] over {check.source}: {len(check.samples)} valid of {check.rows} "
                  f"rows{limit}; {check.summary()}")


@app.command("render")
def render_cmd(
    template: Path = typer.Argument(..., help="Template file (YAML or JSON: system, user, assistant)."),
    model: str = typer.Option(..., "--model", help="Registered causal LM: its tokenizer and chat template."),
    name: str = typer.Option(..., "--name", help="SFT dataset to write (next version)."),
    rows: Path | None = typer.Option(None, "--rows", help=_ROWS),
    docs: Path | None = typer.Option(None, "--docs", help=_DOCS),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Token limit per sample (default: context)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Drop invalid rows instead of failing."),
    seed: int = typer.Option(0, help="Seed of the train/val/test split."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Render every row into an SFT dataset version; any invalid row aborts unless --skip-invalid."""
    st = store()
    from modelfab.llm.templates import render_dataset  # jinja2: the llm extra

    result, check = render_dataset(st, template, model=model, name=name, rows=rows, docs=docs,
                                   max_tokens=max_tokens, skip_invalid=skip_invalid, seed=seed)
    tokens = [s.tokens for s in check.samples]
    splits = dict(sorted(Counter(r.split or "none" for r in version_items(st, result.version.id)).items()))
    payload = {
        "dataset": result.ref, "created": result.created, "items": result.items, "template": check.template,
        "content_hash": result.version.content_hash, "splits": splits,
        "tokens": {"total": sum(tokens), "max": max(tokens), "mean": sum(tokens) / len(tokens)},
        "limit": check.limit, "skipped": [p.as_dict() for p in check.problems],
    }
    if as_json:
        print_json(payload)
        return
    for p in check.problems:
        err_console.print(Text(f"skipped {p.line}", style="yellow"))
    state = "created" if result.created else "unchanged (same content as"
    tail = "" if result.created else ")"
    console.print(f"{state} [bold]{result.ref}[/]{tail}: {result.items} samples, {len(check.problems)} skipped, "
                  f"{sum(tokens)} tokens (max {max(tokens)}), splits "
                  + ", ".join(f"{k} {v}" for k, v in splits.items()))
