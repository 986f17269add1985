"""``modelfab models add-foundation NAME`` and ``modelfab models zoo``: the L0 foundation zoo."""

from __future__ import annotations

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store


def add_foundation(
    name: str = typer.Argument(..., help="Zoo entry: efficientnet-lite0, minilm-l6, local, ... (`models zoo`)."),
    as_name: str | None = typer.Option(None, "--as", help="Register under this model name (default: NAME)."),
    path: str | None = typer.Option(None, help="For `local`: a Hugging Face model folder or safetensors checkpoint."),
    image_size: int | None = typer.Option(None, help="Vision: input side in pixels (default: native size)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Register a zoo backbone as an L0 foundation model with its card (source, licence, parameters,
    input spec). Running it again with the same weights returns the existing model."""
    from modelfab.zoo import BACKBONES
    from modelfab.zoo.registry import register_foundation

    overrides: dict[str, object] = {}
    if path is not None:
        overrides["path"] = path
    if image_size is not None:
        overrides["image_size"] = image_size
    BACKBONES.entry(name)  # unknown names fail here with the list of known ones
    model, created = register_foundation(store(), name, name=as_name, **overrides)
    info = {
        "id": model.id, "name": model.name, "version": model.version, "tier": model.tier,
        "params": model.params, "created": created, "weights": model.weights_digest,
        "modality": model.architecture.get("modality"), "embed_dim": model.architecture.get("embed_dim"),
    }
    if as_json:
        print_json(info)
        return
    verb = "registered" if created else "already registered"
    console.print(f"{verb} L0 {model.name}:{model.version} ({model.id}): {info['modality']}, "
                  f"{model.params:,} parameters, {info['embed_dim']}-d embeddings")


def zoo_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the backbones the zoo can build (catalog entries)."""
    from modelfab.zoo import BACKBONES

    rows = [{"name": e.name, "summary": e.summary} for e in BACKBONES]
    if as_json:
        print_json(rows)
        return
    table = Table(title="foundation zoo")
    table.add_column("name")
    table.add_column("summary")
    for row in rows:
        table.add_row(row["name"], row["summary"])
    console.print(table)
