"""``modelfab tune``, ``modelfab evaluate`` and ``modelfab strategies``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.core.errors import ConfigError

strategies_app = typer.Typer(help="The auto-learning strategy pool: recipes and their record.", no_args_is_help=True)


def _load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of TuneConfig fields")
    return data


def tune(
    base: str = typer.Option(..., help="Base model (L0 or L1): id, NAME, NAME:version or NAME@alias."),
    data: str = typer.Option(..., help="DATASET or DATASET@version with labels."),
    name: str = typer.Option(..., help="Name of the new L2 scenario model."),
    task: str | None = typer.Option(None, help="image-classification, image-defect or text-classification."),
    labels: str | None = typer.Option(None, help="Label view (task) of the dataset, e.g. elpv-defect."),
    method: str | None = typer.Option(None, help="probe, lora, partial or full (default probe)."),
    shots: int | None = typer.Option(None, help="Labeled train items per class (seeded few-shot draw)."),
    seed: int | None = typer.Option(None, help="Seed of the draw, the initialisation and augmentations."),
    epochs: int | None = typer.Option(None, help="Maximum epochs."),
    lr: float | None = typer.Option(None, help="Learning rate of the head."),
    image_size: int | None = typer.Option(None, help="Vision input side (lower is faster)."),
    device: str | None = typer.Option(None, help="auto (CUDA when available; default), cpu, cuda or cuda:N."),
    prior: str | None = typer.Option(
        None, help="image-defect probe: 'gaussian' adds an anomaly prior fitted on the unlabeled pool (default none)."
    ),
    head_init: str | None = typer.Option(
        None, help="lora/partial/full: 'probe' starts the head from the frozen-feature probe (LP-FT; default random)."
    ),
    config: Path | None = typer.Option(None, help="YAML file of TuneConfig fields (flags override it)."),
    auto: bool = typer.Option(False, "--auto", help="Rank the strategy pool and try the best recipes."),
    budget_s: float = typer.Option(900.0, help="--auto: time budget in seconds."),
    top: int = typer.Option(3, help="--auto: recipes to try."),
    optuna_trials: int = typer.Option(4, help="--auto: Optuna refinements of the best recipe (0: none)."),
    resume: bool = typer.Option(False, help="Continue a killed run from its last checkpoint."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train an L2 scenario model from an L0/L1 base and register it with its lineage."""
    from modelfab.tune import TuneConfig
    from modelfab.tune.api import tune as run_tune
    from modelfab.tune.auto import auto_tune

    fields = _load_yaml(config)
    flags = {
        "task": task,
        "labels": labels,
        "method": method,
        "shots": shots,
        "seed": seed,
        "epochs": epochs,
        "lr": lr,
        "image_size": image_size,
        "device": device,
        "prior": prior,
        "head_init": head_init,
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    cfg = TuneConfig.model_validate(fields)
    st = store()
    run_dir = st.settings.home / "runs" / "tune" / name
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    if auto:
        res = auto_tune(
            st, base=base, data=data, name=name, cfg=cfg, budget_s=budget_s, top=top, optuna_trials=optuna_trials
        )
        model, trained = res.model, res.best
        trials = [{"recipe": t.recipe, "score": t.score, "seconds": t.seconds, **t.overrides} for t in res.trials]
    else:
        out = run_tune(st, base=base, data=data, name=name, cfg=cfg, run_dir=run_dir, resume=resume)
        model, trained, trials = out.model, out.trained, []
    info = {
        "model": model.id,
        "name": f"{model.name}:{model.version}",
        "parent": model.parent_id,
        "data": trained.data.ref,
        "method": trained.config.method,
        "recipe": trained.recipe,
        "val": trained.val_metrics,
        "trainable_fraction": trained.trainable_fraction,
        "train_items": len(trained.data.split("train")),
        "seconds": trained.outcome.seconds,
        "resumed_from": trained.outcome.resumed_from,
        "stopped": trained.outcome.stopped,
        "trials": trials,
        "prior": trained.card["scenario"].get("prior"),
    }
    if as_json:
        print_json(info)
        return
    if trials:
        t = Table(title="auto: recipes tried")
        for col in ("recipe", "val score", "seconds", "overrides"):
            t.add_column(col)
        for tr in res.trials:
            t.add_row(tr.recipe, f"{tr.score:.4f}", f"{tr.seconds:.1f}", str(tr.overrides or ""))
        console.print(t)
    val = ", ".join(f"{k} {v:.4f}" for k, v in trained.val_metrics.items())
    if info["prior"]:
        p = info["prior"]
        alone = p["val_auroc_prior_alone"]
        console.print(
            f"anomaly prior: {p['pool_images']} unlabeled pool images, trim {p['trim']:.2f}, probe weight "
            f"{p['weight']:.1f}, {p['state_bytes'] / 2**20:.1f} MB"
            + (f"; val AUROC of the prior alone {alone:.4f}" if alone is not None else "")
        )
    console.print(
        f"registered L2 [bold]{model.name}:{model.version}[/] ({model.id}) from {model.parent_id} "
        f"on {trained.data.ref}: {trained.config.method}, {info['train_items']} train items, "
        f"trainable {trained.trainable_fraction:.2%} of the backbone; val {val}"
    )


def evaluate(
    model: str = typer.Argument(..., help="An L2 model reference."),
    data: str = typer.Option(..., help="DATASET@version[:split] (default split: test)."),
    out: Path | None = typer.Option(None, help="Report folder (default under MODELFAB_HOME/reports)."),
    compare: list[str] = typer.Option([], help="Other models evaluated on the same data to compare with."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Evaluate an L2: metrics, curves, calibration, latency, PNG plots and an HTML report."""
    from modelfab.evaluate.cli_render import render_metrics_table, render_per_class_table
    from modelfab.evaluate.model_eval import evaluate_model

    ev = evaluate_model(store(), model, data, out_dir=out, compare=compare)
    if as_json:
        print_json({**ev.result.to_dict(), "latency": ev.latency, "data": ev.data, "split": ev.split})
        return
    console.print(render_metrics_table(ev.result))
    console.print(render_per_class_table(ev.result))
    if ev.result.comparison is not None:
        console.print(ev.result.comparison.to_rich_table())
    console.print(
        f"latency (batch 1, {ev.latency['device']}): p50 {ev.latency['p50_ms']:.1f} ms, "
        f"p95 {ev.latency['p95_ms']:.1f} ms"
    )
    console.print(f"report: {ev.report_dir / 'report.html'}")


@strategies_app.command("list")
def strategies_list(
    data: str | None = typer.Option(None, help="Rank for this dataset (needs --base)."),
    base: str | None = typer.Option(None, help="Base model whose features describe --data."),
    labels: str | None = typer.Option(None, help="Label view of --data."),
    shots: int | None = typer.Option(None, help="Few-shot size to rank for."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The recipes with their record; with --data/--base, ranked for that dataset."""
    from modelfab.tune import TuneConfig
    from modelfab.tune.api import dataset_meta
    from modelfab.tune.strategies import DEFAULT_ORDER, STRATEGIES, pool_records, rank

    st = store()
    records = pool_records(st)
    ranked = None
    if data:
        if not base:
            raise ConfigError("base: ranking for --data needs --base")
        ranked = rank(st, dataset_meta(st, base, data, TuneConfig(labels=labels, shots=shots)), records)
    rows = []
    order = [r.recipe for r in ranked] if ranked else DEFAULT_ORDER
    by_name = {r.recipe: r for r in ranked or []}
    for name in order:
        mine = [r.score for r in records if r.recipe == name]
        row: dict[str, Any] = {
            "recipe": name,
            "summary": STRATEGIES.entry(name).summary,
            "runs": len(mine),
            "mean_score": sum(mine) / len(mine) if mine else None,
        }
        if name in by_name:
            row.update(
                {
                    "expected": by_name[name].expected,
                    "support": by_name[name].support,
                    "neighbours": by_name[name].neighbours,
                }
            )
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    table = Table(title="strategy pool" + (f" ranked for {data}" if data else " (default order)"))
    for col in ("recipe", "runs", "mean val score", "expected", "support", "summary"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["recipe"],
            str(r["runs"]),
            f"{r['mean_score']:.4f}" if r["mean_score"] is not None else "-",
            f"{r['expected']:.4f}" if "expected" in r else "-",
            f"{r['support']:.2f}" if "support" in r else "-",
            r["summary"],
        )
    console.print(table)


@strategies_app.command("show")
def strategies_show(
    recipe: str = typer.Argument(..., help="Recipe name."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A recipe's settings and every recorded outcome."""
    from modelfab.tune.strategies import STRATEGIES, pool_records

    entry = STRATEGIES.entry(recipe)
    runs = [r for r in pool_records(store()) if r.recipe == recipe]
    rows: list[dict[str, Any]] = [
        {
            "run": r.run_id,
            "data": r.data,
            "score": r.score,
            "classes": r.meta.get("classes"),
            "labels_per_class": r.meta.get("labels_per_class_mean"),
        }
        for r in runs
    ]
    info = {"recipe": recipe, "summary": entry.summary, "overrides": entry.builder.overrides, "runs": rows}
    if as_json:
        print_json(info)
        return
    console.print(f"[bold]{recipe}[/]: {entry.summary}; settings {entry.builder.overrides}")
    table = Table(title=f"{len(runs)} recorded runs")
    for col in ("run", "data", "val score", "classes", "labels/class"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["run"], r["data"], f"{r['score']:.4f}", str(r["classes"]), f"{r['labels_per_class']:.1f}")
    console.print(table)
