"""``modelfab adapt --base L0 --data DATASET[@version] --name NAME``: self-supervised L1 adaptation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:

        def factory(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        yield factory


def adapt(
    base: str = typer.Option(..., help="Base model (L0 or L1): id, NAME, NAME:version or NAME@alias."),
    data: str = typer.Option(..., help="Unlabeled data: DATASET or DATASET@version (labels are ignored)."),
    name: str = typer.Option(..., help="Name of the L1 to register; also names the run folder."),
    objective: str = typer.Option("auto", help="simclr | byol (vision), simcse (text), clm (causal LM + LoRA), auto."),
    steps: int = typer.Option(300, help="Optimizer steps."),
    batch_size: int = typer.Option(64, help="Items per step (two views each)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    train_from: int | None = typer.Option(None, help="Vision: first trainable block (default: the last two stages)."),
    cache_views: int = typer.Option(
        4, help="Vision: cached augmented views per image of the frozen stages (0: no cache)."),
    lora_rank: int = typer.Option(0, help="Train LoRA adapters of this rank on the 1x1 convs instead of full weights."),
    resolution: int | None = typer.Option(None, help="Vision: training resolution in pixels (default: the base's)."),
    max_items: int | None = typer.Option(None, help="Use at most this many items (seeded subset)."),
    split: str = typer.Option("train", help="Split to train on ('all' for every item)."),
    checkpoint_every: int = typer.Option(50, help="Checkpoint every N steps."),
    time_budget: float | None = typer.Option(None, help="Stop cleanly after this many seconds of training."),
    seed: int = typer.Option(0, help="Seed of subset, views and step order."),
    threads: int | None = typer.Option(None, help="torch threads."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run NAME from its last checkpoint."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Continue self-supervised training of a base model on unlabeled data; registers an L1 with the
    base as parent and the dataset version in its lineage. Writes checkpoints, a loss-curve PNG and a
    JSON report under $MODELFAB_HOME/runs/adapt/NAME."""
    from modelfab.adapt import AdaptConfig, adapt_model

    cfg = AdaptConfig(
        objective=objective,  # type: ignore[arg-type]  # validated by AdaptConfig
        steps=steps, batch_size=batch_size, lr=lr, train_from=train_from, cache_views=cache_views,
        lora_rank=lora_rank, resolution=resolution, max_items=max_items,
        split=None if split == "all" else split, checkpoint_every=checkpoint_every,
        time_budget_s=time_budget, seed=seed, threads=threads,
    )
    log: Callable[[str], Any] = (lambda m: err_console.print(m)) if as_json else console.print
    with _progress(not as_json) as factory:
        result = adapt_model(store(), base, data, name, cfg, resume=resume, log=log, progress=factory)
    info = {"id": result.model.id, "name": result.model.name, "version": result.model.version,
            "tier": result.model.tier, "parent": result.model.parent_id, "run_dir": str(result.run_dir),
            **result.report}
    if as_json:
        print_json(info)
        return
    console.print(f"L1 {info['name']}:{info['version']} ({info['id']}): {info['steps']} steps in "
                  f"{info['train_seconds']} s ({info['stopped']}), loss {info['first_loss']:.3f} -> "
                  f"{info['final_loss']:.3f}; report {result.run_dir / 'report.json'}")
