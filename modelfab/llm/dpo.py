"""Direct preference optimisation of a registered chat model on a preference dataset (TRL ``DPOTrainer``).

``dpo(store, policy, data, name, cfg)`` trains on the ``train`` pairs of a ``preference`` dataset.
The reference model is the policy before training:

* a LoRA chat L2 policy keeps training its own adapter (``lora``); TRL 1.16 copies that adapter
  into a frozen ``ref`` adapter and scores the reference with it.  The result is an adapter over
  the same base weights, registered with the policy (e.g. the SFT model) as parent;
* a plain causal LM (L0/L1 or a full chat L2) gets a fresh LoRA adapter (``lora``), whose
  disabled-adapter model is the reference, or trains whole (``full``) against a frozen copy.

Preference accuracy on the held-out split is measured before and after (the policy after against
itself before as reference).  The card records the fraction of synthetic (rule-ranked) pairs.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from modelfab.core.errors import ConfigError, DataError
from modelfab.llm.lm_eval import pair_scores, preference_metrics
from modelfab.llm.models import render_chat
from modelfab.llm.samples import Pair, encode_chat, ensure_chat_template, parse_pair
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

DEFAULT_LR = {"lora": 5e-5, "full": 1e-6}


class DPOConfig(TrainConfig):
    """DPO options (see :class:`~modelfab.llm.train_common.TrainConfig` for the shared ones)."""

    beta: float = Field(default=0.1, gt=0)
    """Strength of the KL anchor to the reference (DPO's beta)."""
    max_prompt_length: int | None = Field(default=None, ge=1)
    """Token limit of a pair's prompt; longer prompts are an error (dropped with ``truncate``)."""
    eval_max_pairs: int = Field(default=200, ge=1)
    """At most this many held-out pairs in the before/after preference evaluation."""

    def learning_rate(self) -> float:
        return self.lr or DEFAULT_LR[self.method]


def _fits(tok: Any, pair: Pair, cfg: DPOConfig) -> bool:
    """Whether the pair fits the limits; over-long pairs raise a DataError unless ``cfg.truncate``."""
    prompt = len(tok(render_chat(tok, pair.prompt, True), add_special_tokens=False)["input_ids"])
    longest = max(len(encode_chat(tok, [*pair.prompt, {"role": "assistant", "content": r}])[0])
                  for r in (pair.chosen, pair.rejected))
    if cfg.max_prompt_length is not None and prompt > cfg.max_prompt_length:
        if cfg.truncate:
            return False
        raise DataError(f"item {pair.key}: prompt is {prompt} tokens, over --max-prompt-length "
                        f"{cfg.max_prompt_length} (raise it or pass --truncate to drop such pairs)")
    if longest > cfg.max_length:
        if cfg.truncate:
            return prompt < cfg.max_length  # TRL cuts the responses' ends
        raise DataError(f"item {pair.key}: prompt + response is {longest} tokens, over --max-length "
                        f"{cfg.max_length} (raise --max-length or pass --truncate)")
    return True


def _record(pair: Pair) -> dict[str, Any]:
    """TRL's conversational preference format."""
    return {"prompt": pair.prompt, "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}]}


def dpo(store: Store, policy_ref: str, data_ref: str, name: str, cfg: DPOConfig | None = None, *,
        log: Log = print) -> Model:
    """Preference-tune ``policy_ref`` on the preference dataset ``data_ref``; register chat L2 ``name``."""
    import datasets
    import trl

    cfg = cfg or DPOConfig()
    check_name(name)
    dv, rows = load_dataset(store, data_ref, ("preference",), "data")
    data = dataset_ref(dv)
    train_pairs = [parse_pair(r) for r in split_rows(rows, "train")]
    if not train_pairs:
        raise DataError(f"data: {data} has no items in split 'train'")
    val_pairs = [parse_pair(r) for r in split_rows(rows, "val")]
    eval_split, eval_rows = held_out_rows(rows)
    eval_pairs = [parse_pair(r) for r in eval_rows][: cfg.eval_max_pairs]
    synthetic = sum(p.synthetic for p in train_pairs) / len(train_pairs)
    inputs = {"policy": policy_ref, "data": data}
    with tracked_run(store, "llm-dpo", config=cfg.to_dict(), inputs=inputs) as run, quiet_training():
        wall_start = time.perf_counter()
        policy = load_policy(store, policy_ref, cfg)
        tok = policy.tokenizer
        ensure_chat_template(tok)
        if cfg.max_length > policy.context:
            raise ConfigError(f"max_length: {cfg.max_length} is over the context of {policy.model.name} "
                              f"({policy.context} tokens)")
        kept = [p for p in train_pairs if _fits(tok, p, cfg)]
        if not kept:
            raise DataError(f"data: every training pair of {data} is over the length limits")
        val_kept = [p for p in val_pairs if _fits(tok, p, cfg)]
        before = pair_scores(policy.module, tok, eval_pairs, cfg.max_length, cfg.batch_size)
        reference = None
        if policy.method == "full":
            reference = copy.deepcopy(policy.module).eval()
            for p in reference.parameters():
                p.requires_grad = False

        folder = run_folder(store, "dpo", policy.model.id, dv.id, name, cfg)
        checkpoint = checkpoint_to_resume(folder, cfg.resume, log)
        args = trl.DPOConfig(**trainer_arguments(cfg, folder, cfg.learning_rate(), bool(val_kept)), beta=cfg.beta)
        counts = parameter_counts(policy.module)
        meter = Meter()
        log(f"DPO ({policy.method}) of {policy.model.name}:{policy.model.version} on {data}: {len(kept)} pairs "
            f"({synthetic:.0%} synthetic), beta {cfg.beta}, {counts['trainable_params']:,} trainable parameters; "
            f"run {folder}")
        trainer = metered(trl.DPOTrainer, meter)(
            model=policy.module, ref_model=reference, args=args, processing_class=tok, callbacks=callbacks(log, meter),
            train_dataset=datasets.Dataset.from_list([_record(p) for p in kept]),
            eval_dataset=datasets.Dataset.from_list([_record(p) for p in val_kept]) if val_kept else None)
        drop_printer(trainer)
        _, seconds = timed_train(trainer, meter, checkpoint)
        history = trainer.state.log_history
        after = pair_scores(trainer.model, tok, eval_pairs, cfg.max_length, cfg.batch_size)
        pref_before = preference_metrics(before)
        pref_after = preference_metrics(after, before)
        metrics: dict[str, Any] = {
            "train_loss": last_logged(history, "loss"),
            "train_reward_accuracy": last_logged(history, "rewards/accuracies"),
            "train_reward_margin": last_logged(history, "rewards/margins"),
            "val_loss": last_logged(history, "eval_loss"),
            "global_step": int(trainer.state.global_step),
            "resumed_from_step": int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0,
            "train_pairs": len(kept), "dropped_pairs": len(train_pairs) - len(kept),
            "synthetic_fraction": round(synthetic, 4),
            "eval_split": eval_split, "eval_pairs": len(eval_pairs),
            "preference_accuracy_before": pref_before["preference_accuracy"],
            "preference_accuracy": pref_after["preference_accuracy"],
            "reward_accuracy": pref_after["reward_accuracy"], "reward_margin": round(pref_after["reward_margin"], 6),
            **counts, **speed_metrics(meter, seconds, time.perf_counter() - wall_start),
        }
        card = {"training": {"kind": "dpo", "method": policy.method, "data": data, "beta": cfg.beta,
                             "reference": policy.model.id, "continued_adapter": policy.continued,
                             "weights_base": policy.weights_base.id, "run_dir": str(folder)},
                "preference_data": {"synthetic": round(synthetic, 4), "pairs": len(kept)}}
        config = {"dpo": cfg.to_dict(), "policy": policy.model.id, "data": data}
        if policy.method == "lora":
            policy.module.set_adapter("default")
        model = register_result(store, policy, name=name, dataset_version=dv.id, config=config,
                                metrics=metrics, card=card)
    finish_run(store, run.id, outputs={"model": model.id, "run_dir": str(folder)}, metrics=metrics)
    log(f"registered L2 {model.name}:{model.version} ({model.id}), parent {policy.model.name}: preference accuracy "
        f"{metrics['preference_accuracy_before']:.3f} -> {metrics['preference_accuracy']:.3f} on {eval_split}, "
        f"reward accuracy {metrics['reward_accuracy']:.3f}, {metrics['train_tokens_per_s']} tokens/s")
    return model
