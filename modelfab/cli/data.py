"""``modelfab data ...``: import, list, show, split, export, import-labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store
from modelfab.core.errors import DataError
from modelfab.data import (
    export_labels,
    import_elpv,
    import_image_folder,
    import_labels,
    import_text_table,
    resplit,
)
from modelfab.data.result import ImportResult
from modelfab.data.splits import parse_ratios
from modelfab.data.tasks import distribution, get_task, task_labels
from modelfab.store.datasets import get_version, list_datasets, list_versions, version_items

app = typer.Typer(help="Datasets: import, versions, splits, labels.", no_args_is_help=True)


def _report(result: ImportResult, as_json: bool) -> None:
    payload = {
        "dataset": result.ref,
        "created": result.created,
        "items": result.items,
        "content_hash": result.version.content_hash,
        "parent_id": result.version.parent_id,
        "skipped": [{"key": k, "reason": r} for k, r in result.skipped],
    }
    if as_json:
        print_json(payload)
        return
    for key, reason in result.skipped:
        err_console.print(f"[yellow]skipped[/] {key}: {reason}")
    state = "created" if result.created else "unchanged (same content as"
    tail = "" if result.created else ")"
    console.print(
        f"{state} [bold]{result.ref}[/]{tail}: {result.items} items, "
        f"{len(result.skipped)} skipped, hash {result.version.content_hash[:12]}"
    )


@app.command("import")
def import_(
    source: str = typer.Argument(..., help="A folder of images, a .csv/.jsonl text table, or 'elpv'."),
    name: str | None = typer.Option(None, help="Dataset name (default: the folder or file name)."),
    unlabeled: bool = typer.Option(False, help="Keep labels as hidden ground truth (oracle/benchmarks only)."),
    strict: bool = typer.Option(False, help="Fail the whole import on any unusable file."),
    text_column: str = typer.Option("text", help="Text column of a table."),
    label_column: str | None = typer.Option(None, help="Label column of a table (default: 'label' if present)."),
    id_column: str | None = typer.Option(None, help="Item id column of a table (default: row number)."),
    seed: int = typer.Option(0, help="Seed of the stratified split."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Import data as the next version of a dataset (nothing is written on failure)."""
    st = store()
    path = Path(source)
    if source == "elpv" and not path.exists():
        result = import_elpv(st, name or "elpv", unlabeled=unlabeled, strict=strict)
    elif path.is_dir():
        result = import_image_folder(
            st, path, name or path.resolve().name, unlabeled=unlabeled, strict=strict, seed=seed
        )
    elif path.is_file():
        result = import_text_table(
            st,
            path,
            name or path.stem,
            text_column=text_column,
            label_column=label_column,
            id_column=id_column,
            unlabeled=unlabeled,
            strict=strict,
            seed=seed,
        )
    else:
        raise DataError(f"{source}: no such file or folder (or use 'elpv')")
    _report(result, as_json)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List datasets with their newest version."""
    rows = list_datasets(store())
    data: list[dict[str, Any]] = [
        {
            "name": ds.name,
            "modality": ds.modality,
            "version": dv.version if dv else None,
            "items": dv.item_count if dv else 0,
            "hash": dv.content_hash if dv else None,
        }
        for ds, dv in rows
    ]
    if as_json:
        print_json(data)
        return
    table = Table(title="datasets")
    for col in ("name", "modality", "latest", "items", "hash"):
        table.add_column(col)
    for d in data:
        table.add_row(d["name"], d["modality"], str(d["version"]), str(d["items"]), (d["hash"] or "")[:12])
    console.print(table)


def describe(ref: str) -> dict[str, Any]:
    """Summary of a version: items, splits, tasks with label distribution, version history."""
    st = store()
    dv = get_version(st, ref)
    rows = version_items(st, dv.id)
    splits = Counter(r.split or "none" for r in rows)
    fields = Counter(f for r in rows for f in r.labels)
    hidden_rows = version_items(st, dv.id, include_hidden=True)
    has_hidden = any(r.hidden for r in hidden_rows)
    tasks = {}
    for tname, spec in dv.tasks.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in (None, "classification", "binary"):  # e.g. ``sft``: no classes to count
            tasks[tname] = {"type": kind, "description": spec.get("description", "")}
            continue
        view = get_task(dv.tasks, tname)
        labels = task_labels(rows, view)
        per_split: dict[str, dict[str, int]] = {}
        for r in rows:
            if r.key in labels:
                per_split.setdefault(r.split or "none", Counter())[labels[r.key]] += 1
        tasks[tname] = {
            "description": view.description,
            "labeled": len(labels),
            "distribution": distribution(labels),
            "by_split": {s: dict(sorted(c.items())) for s, c in sorted(per_split.items())},
            "hidden": has_hidden and not labels,
        }
    return {
        "dataset": dv.dataset.name,
        "modality": dv.dataset.modality,
        "version": dv.version,
        "content_hash": dv.content_hash,
        "items": len(rows),
        "label_fields": dict(fields),
        "hidden_ground_truth": has_hidden,
        "splits": dict(sorted(splits.items())),
        "split_info": dv.split_info,
        "tasks": tasks,
        "versions": [
            {
                "version": v.version,
                "hash": v.content_hash,
                "parent_id": v.parent_id,
                "id": v.id,
                "items": v.item_count,
                "message": v.message,
                "created_at": v.created_at.isoformat(),
            }
            for v in list_versions(st, dv.dataset.name)
        ],
    }


def versions_table(versions: list[dict[str, Any]]) -> Table:
    """A dataset's version history (from :func:`describe`) as a table."""
    table = Table(title="versions")
    for col in ("version", "parent", "items", "hash", "message"):
        table.add_column(col)
    ids = {v["id"]: v["version"] for v in versions}
    for v in versions:
        table.add_row(
            str(v["version"]), str(ids.get(v["parent_id"], "-")), str(v["items"]), v["hash"][:12], v["message"]
        )
    return table


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="DATASET or DATASET@version."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a dataset version: items, label distribution per task, split sizes, history."""
    info = describe(ref)
    if as_json:
        print_json(info)
        return
    console.print(
        f"[bold]{info['dataset']}@{info['version']}[/] ({info['modality']}): {info['items']} items, "
        f"hash {info['content_hash'][:12]}" + (", ground truth hidden" if info["hidden_ground_truth"] else "")
    )
    split_table = Table(title="splits")
    split_table.add_column("split")
    split_table.add_column("items", justify="right")
    for s, n in info["splits"].items():
        split_table.add_row(s, str(n))
    console.print(split_table)
    for tname, t in info["tasks"].items():
        table = Table(title=f"task {tname}: {t['description'] or ''}".rstrip(": "))
        table.add_column("class")
        table.add_column("all", justify="right")
        split_names = sorted(t["by_split"])
        for s in split_names:
            table.add_column(s, justify="right")
        for cls, n in t["distribution"].items():
            table.add_row(cls, str(n), *[str(t["by_split"][s].get(cls, 0)) for s in split_names])
        if t["hidden"]:
            table.add_row("(labels hidden: imported --unlabeled)", "-")
        console.print(table)
    console.print(versions_table(info["versions"]))


@app.command("split")
def split(
    ref: str = typer.Argument(..., help="DATASET or DATASET@version."),
    ratios: str = typer.Option("train=0.55,val=0.1,calibration=0.15,test=0.2", help="name=fraction pairs."),
    seed: int = typer.Option(0, help="Split seed."),
    stratify: str | None = typer.Option(None, help="A visible label field or task to stratify by."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Make a new version with a deterministic stratified split."""
    _report(resplit(store(), ref, parse_ratios(ratios), seed=seed, stratify=stratify), as_json)


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="DATASET or DATASET@version."),
    fmt: str = typer.Option("csv", "--format", help="csv or label-studio."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
) -> None:
    """Export a version's visible labels."""
    text = export_labels(store(), ref, fmt)
    if output is None:
        print(text, end="")
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    err_console.print(f"wrote {output}")


@app.command("import-labels")
def import_labels_(
    ref: str = typer.Argument(..., help="DATASET or DATASET@version to label."),
    path: Path = typer.Argument(..., help="A CSV (key + fields) or a Label Studio JSON export."),
    fmt: str | None = typer.Option(None, "--format", help="csv or label-studio (default: by suffix)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Apply labels; the result is a new version whose parent is REF."""
    _report(import_labels(store(), ref, path, fmt), as_json)


@app.command("check")
def check(
    data: str = typer.Option(..., "--data", help="DATASET or DATASET@version."),
    task: str | None = typer.Option(None, help="Task (label view) to check (default: the first)."),
    backbone: str | None = typer.Option(None, help="A registered L0/L1 for embeddings (else exact duplicates only)."),
    near: float = typer.Option(0.97, help="Cosine similarity of near-duplicate embeddings."),
    folds: int = typer.Option(5, help="Cross-validation folds for out-of-sample probabilities."),
    output: Path | None = typer.Option(None, "--out", help="Write the flagged items as CSV."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Likely label errors, outliers and (near-)duplicates (cleanlab on frozen embeddings)."""
    from modelfab.cli.check_render import render_check, write_flagged
    from modelfab.screen.check import check_dataset
    from modelfab.screen.quality import QualityConfig

    result = check_dataset(store(), data, task=task, backbone=backbone,
                           cfg=QualityConfig(near_duplicate=near, folds=folds))
    if output is not None:
        write_flagged(result, output)
    if as_json:
        print_json(result.to_dict())
        return
    render_check(result)
    if output is not None:
        err_console.print(f"wrote {output}")
