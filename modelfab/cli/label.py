"""``modelfab label queue``: the next batch to label, chosen by an active-learning selector."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store
from modelfab.core.errors import ConfigError
from modelfab.screen.queue import label_queue
from modelfab.screen.select import SELECTORS

app = typer.Typer(help="Labeling: choose what humans label next.", no_args_is_help=True)


@app.command("queue")
def queue(
    data: str = typer.Option(..., "--data", help="DATASET or DATASET@version."),
    budget: int = typer.Option(..., "--budget", help="Items to choose."),
    out: Path | None = typer.Option(None, "--out", help="Write the batch here (Label Studio JSON or CSV)."),
    selector: str = typer.Option(
        "diversity",
        help="diversity (default: no model needed, best early on ELPV), hybrid, uncertainty, badge, random.",
    ),
    config: str | None = typer.Option(None, help='Selector config as JSON, e.g. \'{"measure": "margin"}\'.'),
    model: str | None = typer.Option(None, "--model", help="An L2 giving embeddings and class probabilities."),
    backbone: str | None = typer.Option(None, "--backbone", help="A registered L0/L1 giving embeddings."),
    split: str = typer.Option("train", help="Split to draw from (or 'all')."),
    task: str | None = typer.Option(None, help="Task (label view) whose labels count (default: the first)."),
    seed: int = typer.Option(0, help="Seed (random selector, ties, cold start)."),
    fmt: str = typer.Option("labelstudio", "--format", help="labelstudio or csv."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Choose BUDGET unlabeled items to label next; re-import the labels with `data import-labels`."""
    SELECTORS.entry(selector)  # unknown names fail before any work
    try:
        options = json.loads(config) if config else None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config: not JSON ({exc.msg})") from None
    result = label_queue(
        store(),
        data,
        budget=budget,
        selector=selector,
        selector_config=options,
        split=split,
        task=task,
        model=model,
        backbone=backbone,
        seed=seed,
        out=out,
        fmt=fmt,
    )
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"label queue {result.dataset} ({result.selector}: {result.criterion})")
    for col in ("rank", "key", "split", "score", "suggested", "p"):
        table.add_column(col, justify="right" if col in ("rank", "score", "p") else "left")
    for i in result.items:
        table.add_row(
            str(i.rank),
            i.key,
            i.split or "",
            "-" if i.score is None else f"{i.score:.4f}",
            i.suggested or "-",
            "-" if i.confidence is None else f"{i.confidence:.2f}",
        )
    console.print(table)
    console.print(
        f"pool {result.pool} unlabeled, {result.labeled} labeled in split {split}; "
        f"probabilities: {result.probabilities}; run {result.run_id}"
    )
    if out is not None:
        err_console.print(f"wrote {out}: label it, then `modelfab data import-labels {result.dataset} {out}`")
