"""``modelfab models ...``: list, show, lineage, alias."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.tree import Tree

from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.store.models import LineageNode, get_model, lineage, list_models, model_card, set_alias
from modelfab.store.schema import Model

app = typer.Typer(help="Models: list, show, lineage, aliases.", no_args_is_help=True)


def model_dict(m: Model) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "version": m.version,
        "tier": m.tier,
        "task": m.task,
        "parent_id": m.parent_id,
        "dataset_version_id": m.dataset_version_id,
        "params": m.params,
        "trainable_params": m.trainable_params,
        "metrics": m.metrics,
        "weights": m.weights_digest,
        "created_at": m.created_at.isoformat(),
    }


@app.command("list")
def list_(
    tier: str | None = typer.Option(None, help="Only this tier (L0, L1, L2)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List registered models."""
    models = list_models(store(), tier)
    if as_json:
        print_json([model_dict(m) for m in models])
        return
    table = Table(title="models")
    for col in ("id", "name", "ver", "tier", "task", "parent", "params"):
        table.add_column(col)
    for m in models:
        table.add_row(m.id, m.name, str(m.version), m.tier, m.task, m.parent_id or "-", f"{m.params:,}")
    console.print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="Model id, NAME, NAME:version or NAME@alias."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a model's card: lineage, config, metrics, weights."""
    st = store()
    m = get_model(st, ref)
    info = {**model_dict(m), "architecture": m.architecture, "config": m.config, "card": model_card(st, m.id)}
    if as_json:
        print_json(info)
        return
    table = Table(title=f"{m.name}:{m.version} ({m.id})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("tier", "task", "parent_id", "dataset_version_id", "params", "trainable_params", "weights"):
        table.add_row(key, str(info[key]))
    for key, value in sorted(m.metrics.items()):
        table.add_row(f"metrics.{key}", str(value))
    for key, value in sorted(m.config.items()):
        table.add_row(f"config.{key}", str(value))
    console.print(table)


def _label(node: LineageNode) -> str:
    m = node.model
    data = f" [dim]data={node.dataset}[/]" if node.dataset else ""
    return f"[bold]{m.tier}[/] {m.name}:{m.version} [dim]{m.id}[/] task={m.task}{data}"


def _tree_dict(node: LineageNode) -> dict[str, Any]:
    return {**model_dict(node.model), "dataset": node.dataset, "children": [_tree_dict(c) for c in node.children]}


@app.command("lineage")
def lineage_(
    ref: str | None = typer.Argument(None, help="Show the tree through this model (default: all)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Draw the lineage tree L0 -> L1 -> L2 with the data each model was trained on."""
    roots = lineage(store(), ref)
    if as_json:
        print_json([_tree_dict(r) for r in roots])
        return
    top = Tree("[bold]lineage[/]")

    def add(parent: Tree, node: LineageNode) -> None:
        branch = parent.add(_label(node))
        for child in node.children:
            add(branch, child)

    for root in roots:
        add(top, root)
    console.print(top if roots else "no models registered")


@app.command("alias")
def alias(
    ref: str = typer.Argument(..., help="The model to point the alias at."),
    name: str = typer.Argument(..., help="Alias, e.g. production."),
) -> None:
    """Point NAME@ALIAS at a model (moves an existing alias)."""
    m = set_alias(store(), ref, name)
    console.print(f"{m.name}@{name} -> {m.id}")


@app.command("select")
def select(
    task: str = typer.Option(..., help="Task, e.g. image-defect."),
    data: str = typer.Option(..., help="DATASET@version whose validation split ranks the models."),
    max_latency_ms: float = typer.Option(..., help="Latency budget per call at --batch, in milliseconds."),
    max_size_mb: float | None = typer.Option(None, help="Size budget in MB (1e6 bytes)."),
    batch: int = typer.Option(1, help="Batch size the budget applies to."),
    device: str = typer.Option("this", help="'this' machine (profiles missing ones) or a stored device label."),
    runtime: str = typer.Option("any", help="any, torch or onnxruntime."),
    threads: int | None = typer.Option(None, help="Threads of the profiles (default: torch's setting)."),
    stat: str = typer.Option("p50", help="Latency statistic compared with the budget: p50 or p95."),
    extract_if_none: bool = typer.Option(False, "--extract-if-none",
                                         help="Nothing fits: run the cheapest compressor that can meet the budget."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pick the best model of a task under a latency/size budget; explain every exclusion (exit 2 if none fits)."""
    from modelfab.compress.select import BudgetError, select_model, select_or_extract

    args: dict[str, Any] = {"task": task, "data": data, "max_latency_ms": max_latency_ms, "max_size_mb": max_size_mb,
            "batch": batch, "device": device, "runtime": runtime, "threads": threads, "stat": stat}
    attempts: list[dict[str, Any]] = []
    if extract_if_none:
        sel, attempts = select_or_extract(store(), **args)
    else:
        sel = select_model(store(), **args)
    if as_json:
        print_json({**sel.to_dict(), "extracted": attempts})
    else:
        table = Table(title=f"{task} on {sel.data} val, {sel.device}, batch {batch}, {sel.threads} threads")
        for col in ("", "model", "runtime", sel.metric, f"{stat} ms", "size MB", "why"):
            table.add_column(col)
        for c in sel.candidates:
            mark = {"chosen": "[green]✔[/]", "fits": "ok"}.get(c.status, "[red]✘[/]")
            table.add_row(mark, f"{c.model.name}:{c.model.version}", c.runtime or "-",
                          f"{c.metric:.4f}" if c.metric is not None else "-",
                          f"{c.latency_ms:.1f}" if c.latency_ms is not None else "-",
                          f"{c.size_mb:.1f}" if c.size_mb is not None else "-", c.reason)
        console.print(table)
        for a in attempts:
            console.print(f"extracted with {a['method']} {a['options']}: {a.get('model') or a.get('error')}")
    if sel.chosen is None:
        raise BudgetError(sel.nothing_fits())
