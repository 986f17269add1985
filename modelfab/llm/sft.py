"""Supervised fine-tuning of a registered causal LM on a chat dataset (TRL ``SFTTrainer``).

``sft(store, base, data, name, cfg)`` trains a LoRA adapter or the whole network on the ``train``
split of a ``chat`` dataset (loss on assistant turns only by default), evaluates the ``val`` split
each epoch, optionally mixes in general data (replay, against forgetting) and measures the change
of NLL on a general held-out set (the regression report).  The result is registered as a chat L2
with the base as parent and the dataset version in its lineage; the run is recorded.

Samples are tokenized here (``input_ids`` + ``labels`` with -100 outside the loss), so the loss
mask does not depend on ``{% generation %}`` markers in the chat template.  Checkpoints and resume:
see :mod:`modelfab.llm.train_common`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from modelfab.core.errors import ConfigError, DataError
from modelfab.llm.lm_eval import general_nll, regression_change
from modelfab.llm.samples import (
    Chat,
    Sample,
    encode_chat,
    encode_text,
    ensure_chat_template,
    fit_length,
    general_samples,
    parse_chat,
)
from modelfab.llm.train_common import (
    Log,
    Meter,
    TrainConfig,
    callbacks,
    check_name,
    checkpoint_to_resume,
    dataset_ref,
    drop_printer,
    held_out_rows,
    last_logged,
    load_dataset,
    load_policy,
    metered,
    parameter_counts,
    quiet_training,
    register_result,
    run_folder,
    speed_metrics,
    split_rows,
    timed_train,
    trainer_arguments,
)
from modelfab.store.runs import finish_run, tracked_run

if TYPE_CHECKING:
    from modelfab.store.schema import Model
    from modelfab.store.store import Store

DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}
Example = dict[str, list[int]]  # {"input_ids": (T,), "labels": (T,)}


class SFTConfig(TrainConfig):
    """Supervised fine-tuning options (see :class:`~modelfab.llm.train_common.TrainConfig` for the shared ones)."""

    completion_only: bool = True
    """Loss on assistant turns only; False: on every token of the chat."""
    replay_ref: str | None = None
    """A general dataset (chat or text) mixed into training against forgetting."""
    replay_ratio: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of the training mix drawn (seeded) from ``replay_ref``."""
    general_ref: str | None = None
    """A general dataset (chat or text) whose held-out split measures forgetting (regression report)."""
    general_max_items: int = Field(default=200, ge=1)
    """At most this many general samples (seeded subset) in the regression report."""

    @model_validator(mode="after")
    def _replay(self) -> SFTConfig:
        if self.replay_ratio > 0 and not self.replay_ref:
            raise ValueError("replay_ratio needs replay_ref (a general dataset to replay)")
        if self.replay_ref and self.replay_ratio == 0:
            raise ValueError("replay_ratio must be > 0 when replay_ref is given")
        return self

    def learning_rate(self) -> float:
        return self.lr or DEFAULT_LR[self.method]


def _chat_example(tokenizer: Any, key: str, chat: Chat, cfg: SFTConfig) -> Example:
    ids, mask = encode_chat(tokenizer, chat)
    if not any(mask):
        raise DataError(f"item {key}: the chat has no assistant turn to learn from")
    if not cfg.completion_only:
        mask = [1] * len(ids)
    ids = fit_length(key, ids, cfg.max_length, cfg.truncate)
    labels = [t if m else -100 for t, m in zip(ids, mask, strict=False)]
    return {"input_ids": ids, "labels": labels}


def _sample_example(tokenizer: Any, key: str, sample: Sample, cfg: SFTConfig) -> Example:
    if isinstance(sample, str):
        ids = fit_length(key, encode_text(tokenizer, sample), cfg.max_length, cfg.truncate)
        return {"input_ids": ids, "labels": list(ids)}
    return _chat_example(tokenizer, key, sample, cfg)


def replay_draw(pool: Sequence[Any], n_task: int, ratio: float, seed: int) -> list[Any]:
    """``round(ratio * n_task / (1 - ratio))`` items of ``pool`` (seeded; with repeats only if the pool is short),
    so that they make up ``ratio`` of the mixed training set."""
    n = round(ratio * n_task / (1 - ratio))
    rng = random.Random(seed)
    if n <= len(pool):
        return rng.sample(list(pool), n)
    return [pool[i % len(pool)] for i in rng.sample(range(n), n)] if pool else []


def _replay(store: Store, tok: Any, cfg: SFTConfig, n_task: int) -> list[Example]:
    """Replay examples from the train split (else every item) of ``cfg.replay_ref``."""
    assert cfg.replay_ref is not None
    dv, rows = load_dataset(store, cfg.replay_ref, ("chat", "text"), "replay")
    pool_rows = split_rows(rows, "train") or rows
    pool = list(zip([r.key for r in pool_rows], general_samples(pool_rows, dv.dataset.modality), strict=True))
    if not pool:
        raise DataError(f"replay: {dataset_ref(dv)} has no usable items")
    return [_sample_example(tok, k, s, cfg) for k, s in replay_draw(pool, n_task, cfg.replay_ratio, cfg.seed)]


def _general(store: Store, ref: str, cfg: SFTConfig) -> tuple[str, list[Sample]]:
    dv, rows = load_dataset(store, ref, ("chat", "text"), "general")
    split, held = held_out_rows(rows)
    if len(held) > cfg.general_max_items:
        held = sorted(random.Random(cfg.seed).sample(held, cfg.general_max_items), key=lambda r: r.key)
    samples = general_samples(held, dv.dataset.modality)
    if not samples:
        raise DataError(f"general: {dataset_ref(dv)} has no usable items")
    return f"{dataset_ref(dv)}:{split}", samples


def sft(store: Store, base_ref: str, data_ref: str, name: str, cfg: SFTConfig | None = None, *,
        log: Log = print) -> Model:
    """Fine-tune ``base_ref`` on the chat dataset ``data_ref``; register and return chat L2 ``name``."""
    import datasets
    import trl

    cfg = cfg or SFTConfig()
    check_name(name)
    dv, rows = load_dataset(store, data_ref, ("chat",), "data")
    data = dataset_ref(dv)
    train_rows, val_rows = split_rows(rows, "train"), split_rows(rows, "val")
    if not train_rows:
        raise DataError(f"data: {data} has no items in split 'train'")
    train_chats = [(r.key, parse_chat(r)) for r in train_rows]
    val_chats = [(r.key, parse_chat(r)) for r in val_rows]
    inputs = {"base": base_ref, "data": data, "replay": cfg.replay_ref, "general": cfg.general_ref}
    with tracked_run(store, "llm-sft", config=cfg.to_dict(), inputs=inputs) as run, quiet_training():
        wall_start = time.perf_counter()
        policy = load_policy(store, base_ref, cfg)
        tok = policy.tokenizer
        ensure_chat_template(tok)
        if cfg.max_length > policy.context:
            raise ConfigError(f"max_length: {cfg.max_length} is over the context of {policy.model.name} "
                              f"({policy.context} tokens)")
        train = [_chat_example(tok, k, c, cfg) for k, c in train_chats]
        val = [_chat_example(tok, k, c, cfg) for k, c in val_chats]
        n_task = len(train)
        if cfg.replay_ref:
            train += _replay(store, tok, cfg, n_task)
        general = _general(store, cfg.general_ref, cfg) if cfg.general_ref else None
        if general is not None:
            log(f"general NLL before training on {general[0]} ({len(general[1])} samples)")
            base_nll = general_nll(policy.module, tok, general[1], cfg.max_length, cfg.batch_size)

        folder = run_folder(store, "sft", policy.model.id, dv.id, name, cfg)
        checkpoint = checkpoint_to_resume(folder, cfg.resume, log)
        args = trl.SFTConfig(**trainer_arguments(cfg, folder, cfg.learning_rate(), bool(val)))
        counts = parameter_counts(policy.module)
        meter = Meter()
        log(f"SFT ({policy.method}) of {policy.model.name}:{policy.model.version} on {data}: {n_task} samples"
            f" + {len(train) - n_task} replay, {counts['trainable_params']:,} trainable parameters; run {folder}")
        trainer = metered(trl.SFTTrainer, meter)(
            model=policy.module, args=args, processing_class=tok, callbacks=callbacks(log, meter),
            train_dataset=datasets.Dataset.from_list(train),
            eval_dataset=datasets.Dataset.from_list(val) if val else None)
        drop_printer(trainer)
        val_base = trainer.evaluate()["eval_loss"] if val else None
        _, seconds = timed_train(trainer, meter, checkpoint)
        val_after = trainer.evaluate()["eval_loss"] if val else None
        metrics: dict[str, Any] = {
            "train_loss": last_logged(trainer.state.log_history, "loss"),
            "val_loss_base": val_base, "val_loss": val_after, "global_step": int(trainer.state.global_step),
            "resumed_from_step": int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0,
            "task_examples": n_task, "replay_examples": len(train) - n_task,
            "replay_fraction": round((len(train) - n_task) / len(train), 4), **counts,
            **speed_metrics(meter, seconds, time.perf_counter() - wall_start),
        }
        if general is not None:
            metrics.update(regression_change(base_nll, general_nll(trainer.model, tok, general[1], cfg.max_length,
                                                                   cfg.batch_size)))
            metrics["general_eval"] = general[0]
        card = {"training": {"kind": "sft", "method": policy.method, "data": data, "replay": cfg.replay_ref,
                             "replay_ratio": cfg.replay_ratio, "general": general[0] if general else None,
                             "continued_adapter": policy.continued, "run_dir": str(folder)}}
        config = {"sft": cfg.to_dict(), "base": policy.model.id, "data": data}
        model = register_result(store, policy, name=name, dataset_version=dv.id, config=config,
                                metrics=metrics, card=card)
    finish_run(store, run.id, outputs={"model": model.id, "run_dir": str(folder)}, metrics=metrics)
    log(f"registered L2 {model.name}:{model.version} ({model.id}), parent {policy.model.name}: train loss "
        f"{_fmt(metrics['train_loss'])}, val loss {_fmt(val_base)} -> {_fmt(val_after)}, "
        f"{metrics['train_tokens_per_s']} tokens/s")
    return model


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
