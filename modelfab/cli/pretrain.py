"""``modelfab pretrain --config FILE``: train an L0 on your corpus and register it (tier L0, task lm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store
from modelfab.pretrain.config import RunConfig, load_run_config
from modelfab.pretrain.run import PretrainResult, run_pretraining
from modelfab.store.store import Store


def register_result(st: Store, cfg: RunConfig, result: PretrainResult, name: str | None = None) -> Any:
    """Store the exported model as a ``modelfab-lm`` backbone (safetensors + backbone card with its
    tokenizer) and register it as an L0 (task lm) that ``tune`` and ``adapt`` load as a base.

    The card mirrors :func:`modelfab.zoo.registry.register_backbone` (``backbone``,
    ``backbone_card``, ``source``, ``licence``, ``input_spec``) and keeps the run's own fields;
    ``arch`` stays the pretrain model config so the weights rebuild a plain ``Transformer``."""
    from modelfab.zoo.lm.pretrained import from_exported
    from modelfab.zoo.storage import save_backbone

    tok_file = result.model_dir / "tokenizer.json"
    tokenizer = st.artifacts.put_file(tok_file) if tok_file.exists() else None
    corpus = str(result.card.get("corpus_sha256", ""))
    backbone = from_exported(result.model_dir, max_length=cfg.model.max_seq_len,
                             trained_on=f"modelfab pretrain run {cfg.name!r} (corpus sha256 {corpus[:12]})")
    saved = save_backbone(backbone, st.artifacts)
    last = result.train.last
    metrics = {
        "final_loss": result.train.final_loss,
        "final_ce": last.get("ce"),
        "steps": result.train.steps,
        "tokens": result.train.tokens,
        "loss_spikes": last.get("spikes"),
        "max_mean_load": last.get("max_mean_load"),
    }
    card = {
        **result.card,
        "tokenizer": tokenizer,
        "format": "modelfab.pretrain.Transformer",
        "backbone": saved.card_data,
        "backbone_card": saved.card,
        "source": backbone.source.to_dict(),
        "licence": backbone.source.licence,
        "input_spec": backbone.input_spec.to_dict(),
    }
    return st.register_model(
        name=name or cfg.name,
        tier="L0",
        task="lm",
        arch={"family": "modelfab-l0", **result.card["model_config"]},
        config=cfg.model_dump(mode="json"),
        metrics={k: v for k, v in metrics.items() if v is not None},
        params=result.train.params,
        trainable_params=result.train.params,
        weights=saved.weights,
        card=card,
        parent=None,
        dataset_version=cfg.data.dataset,
    )


def pretrain(
    config: Path = typer.Option(..., "--config", help="YAML run config (see docs/pretrain.md)."),
    name: str | None = typer.Option(None, "--name", help="Register under this name instead of the config's."),
    stop_after: int | None = typer.Option(
        None, "--stop-after", help="Stop after this step; the schedule still spans train.max_steps."
    ),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the result as an L0."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pretrain an L0 language model on your corpus (resumes from the run folder) and register it."""
    cfg = load_run_config(config)
    result = run_pretraining(cfg, stop_after=stop_after)
    model = register_result(store(), cfg, result, name) if register else None
    summary = {
        "model_id": getattr(model, "id", None),
        "name": getattr(model, "name", name or cfg.name),
        "version": getattr(model, "version", None),
        "steps": result.train.steps,
        "tokens": result.train.tokens,
        "final_loss": result.train.final_loss,
        "params": result.train.params,
        "active_params": result.train.active_params,
        "model_dir": str(result.model_dir),
        "log": str(result.train.log_path),
    }
    if as_json:
        print_json(summary)
        return
    table = Table(title="pretrain")
    table.add_column("field")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
