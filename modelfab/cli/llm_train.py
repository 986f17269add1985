"""``modelfab llm sft|dpo|eval``: train chat models (SFT, DPO) and evaluate them (regression, preferences)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store

_METHOD_HELP = "lora: train a LoRA adapter (stored alone); full: train every weight."


def _log(as_json: bool) -> Callable[[str], Any]:
    return (lambda m: err_console.print(m, markup=False)) if as_json else (lambda m: console.print(m, markup=False))


def _report(model: Any, as_json: bool, title: str) -> None:
    info = {"id": model.id, "name": model.name, "version": model.version, "tier": model.tier,
            "parent": model.parent_id, "metrics": model.metrics}
    if as_json:
        print_json(info)
        return
    table = Table(title=f"{title} {model.name}:{model.version} ({model.id}), parent {model.parent_id}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in model.metrics.items():
        table.add_row(key, _fmt(value))
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def sft(
    base: str = typer.Option(..., help="Base causal LM: id, NAME, NAME:version or NAME@alias (a chat L2 too)."),
    data: str = typer.Option(..., help="Chat dataset DATASET[@version] (train split trains, val split evaluates)."),
    name: str = typer.Option(..., help="Name of the chat L2 to register."),
    method: str = typer.Option("lora", help=_METHOD_HELP),
    epochs: float = typer.Option(1.0, help="Passes over the training mix."),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps."),
    lr: float | None = typer.Option(None, help="Peak learning rate (default 2e-4 lora, 2e-5 full)."),
    batch_size: int = typer.Option(4, help="Samples per micro-batch."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    lora_r: int = typer.Option(8, help="LoRA rank."),
    lora_alpha: int = typer.Option(16, help="LoRA alpha (scale = alpha / r)."),
    max_length: int = typer.Option(512, help="Token limit per sample (longer ones fail unless --truncate)."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut over-long samples instead of failing."),
    all_tokens: bool = typer.Option(False, "--all-tokens", help="Loss on every token, not only assistant turns."),
    replay: str | None = typer.Option(None, help="General dataset (chat or text) replayed against forgetting."),
    replay_ratio: float = typer.Option(0.0, help="Fraction of the training mix drawn from --replay."),
    general: str | None = typer.Option(None, help="General dataset whose held-out split gives the regression report."),
    save_steps: int | None = typer.Option(None, help="Checkpoint every N steps (default: each epoch and the end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the same run from its last checkpoint."),
    seed: int = typer.Option(0, help="Seed of adapter init, data order and replay draw."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Supervised fine-tuning (TRL) of a causal LM on a chat dataset; registers a chat L2 with lineage."""
    from modelfab.llm.sft import SFTConfig
    from modelfab.llm.sft import sft as run_sft

    cfg = SFTConfig(method=method, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,  # type: ignore[arg-type]
                    grad_accum=grad_accum, lora_r=lora_r, lora_alpha=lora_alpha, max_length=max_length,
                    truncate=truncate, completion_only=not all_tokens, replay_ref=replay, replay_ratio=replay_ratio,
                    general_ref=general, save_steps=save_steps, resume=resume, seed=seed)
    _report(run_sft(store(), base, data, name, cfg, log=_log(as_json)), as_json, "SFT")


def dpo(
    policy: str = typer.Option(..., help="Policy chat model (e.g. the SFT L2); it is also the reference."),
    data: str = typer.Option(..., help="Preference dataset DATASET[@version] (train pairs train, test evaluates)."),
    name: str = typer.Option(..., help="Name of the chat L2 to register."),
    method: str = typer.Option("lora", help=_METHOD_HELP + " A LoRA policy keeps training its adapter."),
    beta: float = typer.Option(0.1, help="DPO beta (strength of the anchor to the reference)."),
    epochs: float = typer.Option(1.0, help="Passes over the pairs."),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps."),
    lr: float | None = typer.Option(None, help="Peak learning rate (default 5e-5 lora, 1e-6 full)."),
    batch_size: int = typer.Option(4, help="Pairs per micro-batch."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    lora_r: int = typer.Option(8, help="LoRA rank of a fresh adapter."),
    lora_alpha: int = typer.Option(16, help="LoRA alpha of a fresh adapter."),
    max_length: int = typer.Option(512, help="Token limit of prompt + response (longer fails unless --truncate)."),
    max_prompt_length: int | None = typer.Option(None, help="Token limit of a prompt (longer fails, or --truncate)."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut over-long responses, drop over-long prompts."),
    save_steps: int | None = typer.Option(None, help="Checkpoint every N steps (default: each epoch and the end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the same run from its last checkpoint."),
    seed: int = typer.Option(0, help="Seed of adapter init and data order."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Direct preference optimisation (TRL) of a chat model on ranked pairs; registers a chat L2 with lineage."""
    from modelfab.llm.dpo import DPOConfig
    from modelfab.llm.dpo import dpo as run_dpo

    cfg = DPOConfig(method=method, beta=beta, epochs=epochs, max_steps=max_steps, lr=lr,  # type: ignore[arg-type]
                    batch_size=batch_size, grad_accum=grad_accum, lora_r=lora_r, lora_alpha=lora_alpha,
                    max_length=max_length, max_prompt_length=max_prompt_length, truncate=truncate,
                    save_steps=save_steps, resume=resume, seed=seed)
    _report(run_dpo(store(), policy, data, name, cfg, log=_log(as_json)), as_json, "DPO")


def evaluate(
    model: str = typer.Argument(..., help="A registered causal LM or chat L2."),
    general: str | None = typer.Option(None, help="General dataset (chat or text): mean token NLL."),
    preferences: str | None = typer.Option(None, help="Preference dataset: accuracy of chosen over rejected."),
    split: str = typer.Option("test", help="Split to read ('all' for every item)."),
    reference: str | None = typer.Option(None, help="Reference model for the DPO implicit reward accuracy."),
    max_length: int = typer.Option(512, help="Tokens per scored sequence (longer ones are cut)."),
    max_items: int | None = typer.Option(None, help="Evaluate at most this many items."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Regression (general NLL) and preference evaluation of a chat model."""
    from modelfab.llm.lm_eval import evaluate_registered

    out = evaluate_registered(store(), model, general_ref=general, preferences_ref=preferences, split=split,
                              reference_ref=reference, max_length=max_length, max_items=max_items)
    if as_json:
        print_json(out)
        return
    table = Table(title=f"evaluation of {out['model']} ({split} split)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in out.items():
        if key not in ("model", "split"):
            table.add_row(key, _fmt(value))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``llm`` app."""
    app.command("sft")(sft)
    app.command("dpo")(dpo)
    app.command("eval")(evaluate)
