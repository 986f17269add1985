"""What SFT and DPO share: the config base, dataset loading and splits, the policy being trained,
the run folder (checkpoints, resume), trainer arguments, speed accounting and registration. Item
parsing and chat tokenization are in :mod:`modelfab.llm.samples`.

Run folders: ``$MODELFAB_HOME/runs/llm/<kind>/<name>-<key>`` where ``key`` hashes the base model id,
the dataset version id, the name and the config fields that change what is trained (not the ones
that only say how long: ``epochs``, ``max_steps``; nor ``resume`` or evaluation-only fields), so a
longer run of the same config resumes where a shorter one stopped.

Checkpoints are the HF Trainer's ``checkpoint-<step>`` folders.  Weights are safetensors
(``adapter_model.safetensors`` / ``model.safetensors``); the optimizer, scheduler and RNG states
(``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``) and ``training_args.bin`` are torch pickles
written by this process into our own folder, never files supplied by a user.  On resume,
transformers 5.24 reads them with ``torch.load(..., weights_only=True)`` (no arbitrary objects);
``training_args.bin`` is never read back; TRL 1.16 adds no ``torch.load`` of its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from modelfab.core.errors import ConfigError
from modelfab.llm.models import (
    apply_lora,
    context_length,
    import_peft,
    load_base,
    lora_info,
    register_chat_model,
)

if TYPE_CHECKING:
    from modelfab.store.datasets import ItemRow
    from modelfab.store.schema import DatasetVersion, Model
    from modelfab.store.store import Store
    from modelfab.zoo.lm.causal import CausalLMBackbone

Log = Callable[[str], Any]
# Config fields that do not change what a step of training does (excluded from the run-folder key).
_NOT_IN_KEY = {"resume", "epochs", "max_steps", "save_steps", "save_total_limit", "general_ref",
               "general_max_items", "eval_max_pairs"}


class TrainConfig(BaseModel):
    """Fields shared by SFT and DPO (each field is a CLI option)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = "lora"
    """lora: train a LoRA adapter (only the adapter is stored); full: train every weight."""
    lora_r: int = Field(default=8, ge=1)
    """LoRA rank (ignored when continuing an existing adapter)."""
    lora_alpha: int = Field(default=16, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get adapters: ``all-linear`` or a list of module names."""
    lr: float | None = Field(default=None, gt=0)
    """Peak learning rate (linear decay); None: the method's default."""
    epochs: float = Field(default=1.0, gt=0)
    """Passes over the training mix (``max_steps`` wins when set)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (a later run with more steps and ``resume`` continues)."""
    batch_size: int = Field(default=4, ge=1)
    """Samples per micro-batch."""
    grad_accum: int = Field(default=1, ge=1)
    """Micro-batches per optimizer step."""
    max_length: int = Field(default=512, ge=8)
    """Token limit per training sequence; longer samples are an error unless ``truncate``."""
    truncate: bool = False
    """Cut over-long samples to ``max_length`` instead of failing."""
    seed: int = 0
    """Seed of adapter init, data order and replay draw."""
    save_steps: int | None = Field(default=None, ge=1)
    """Checkpoint every N steps (None: at each epoch end); the last step is always saved."""
    save_total_limit: int = Field(default=2, ge=1)
    """Checkpoints kept on disk."""
    resume: bool = False
    """Continue from the last checkpoint of the same run (same base, data, name and config)."""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- datasets


def load_dataset(store: Store, ref: str, modalities: Sequence[str], what: str) -> tuple[DatasetVersion, list[ItemRow]]:
    """A dataset version's items, after checking its modality (``what`` names the option in errors)."""
    from modelfab.store.datasets import get_version, version_items

    dv = get_version(store, ref)
    modality = dv.dataset.modality
    if modality not in modalities:
        raise ConfigError(f"{what}: {dv.dataset.name}@{dv.version} is a {modality} dataset; "
                          f"expected {' or '.join(modalities)}")
    return dv, version_items(store, dv.id)


def dataset_ref(dv: DatasetVersion) -> str:
    return f"{dv.dataset.name}@{dv.version}"


def split_rows(rows: Sequence[ItemRow], split: str) -> list[ItemRow]:
    return [r for r in rows if r.split == split]


def held_out_rows(rows: Sequence[ItemRow]) -> tuple[str, list[ItemRow]]:
    """The test split, else val, else every item (``"all"``): what an evaluation reads."""
    for split in ("test", "val"):
        found = split_rows(rows, split)
        if found:
            return split, found
    return "all", list(rows)


# ---------------------------------------------------------------- the policy being trained


@dataclass
class Policy:
    """The network to train and where its result sits in the registry."""

    model: Model
    """The registry row named by the user: the result's parent."""
    weights_base: Model
    """The model whose weights a LoRA result applies to (== ``model`` unless an adapter continues)."""
    backbone: CausalLMBackbone
    """``backbone.module`` trains: a PeftModel (lora) or a plain causal LM (full)."""
    method: str
    continued: bool
    """True when an existing chat L2's LoRA adapter keeps training."""
    context: int

    @property
    def module(self) -> Any:
        return self.backbone.module

    @property
    def tokenizer(self) -> Any:
        return self.backbone.tokenizer


def load_policy(store: Store, ref: str, cfg: TrainConfig) -> Policy:
    """Load ``ref`` for training with ``cfg.method``.

    A plain causal LM gets a fresh LoRA adapter (lora) or trains whole (full).  A LoRA chat L2
    continues its own adapter (lora; the result is an adapter over the same base weights), or is
    merged into its base weights and trained whole (full).
    """
    model = store.get_model(ref)
    info = lora_info(store, model)
    if info is not None:
        backbone, base = load_base(store, info["base"])
        module = apply_lora(backbone.module, store, model)
        if cfg.method == "full":
            backbone.module = module.merge_and_unload()
            backbone.module.requires_grad_(True)  # PEFT froze the base weights
            return Policy(model, model, backbone, "full", False, context_length(backbone))
        for pname, param in module.named_parameters():
            param.requires_grad = "lora_" in pname
        backbone.module = module
        return Policy(model, base, backbone, "lora", True, context_length(backbone))
    backbone, base = load_base(store, model.id)
    if cfg.method == "lora":
        peft = import_peft()
        torch.manual_seed(cfg.seed)
        lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        backbone.module = peft.get_peft_model(backbone.module, lora)
    else:
        backbone.module.requires_grad_(True)
    return Policy(base, base, backbone, cfg.method, False, context_length(backbone))


def parameter_counts(module: Any) -> dict[str, Any]:
    """Trainable and total parameters (a PeftModel's total includes its adapters)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total,
            "trainable_fraction": round(trainable / total, 6) if total else 0.0}


def register_result(store: Store, policy: Policy, *, name: str, dataset_version: int, config: dict[str, Any],
                    metrics: dict[str, Any], card: dict[str, Any]) -> Model:
    """Register the trained policy as a chat L2 (parent = ``policy.model``)."""
    policy.module.eval()
    # A continued adapter runs over ``weights_base``; lineage comes from ``policy.model`` either way.
    base = policy.weights_base if policy.method == "lora" else policy.model
    return register_chat_model(store, name=name, base=base, backbone=policy.backbone, method=policy.method,
                               dataset_version=dataset_version, config=config, metrics=metrics, card=card,
                               parent=policy.model)


def check_name(name: str) -> None:
    if not name or "@" in name or ":" in name or "/" in name:
        raise ConfigError(f"name: {name!r} must be non-empty without '@', ':' or '/'")


# ---------------------------------------------------------------- run folder, trainer arguments


def run_folder(store: Store, kind: str, base_id: str, data_version_id: int, name: str, cfg: TrainConfig) -> Path:
    """``$MODELFAB_HOME/runs/llm/<kind>/<name>-<key>`` (see the module docstring for the key)."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_KEY}
    blob = json.dumps({"base": base_id, "data": data_version_id, "name": name, "config": fields}, sort_keys=True)
    return store.settings.home / "runs" / "llm" / kind / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def checkpoint_to_resume(folder: Path, resume: bool, log: Log) -> str | None:
    """The last checkpoint when resuming; otherwise clear old checkpoints so a new run starts clean."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if resume and last:
        log(f"resuming from {last}")
        return str(last)
    if resume:
        log(f"no checkpoint in {folder}; starting from the beginning")
    elif folder.is_dir():
        for old in folder.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    return None


def precision() -> dict[str, Any]:
    """bf16 on a CUDA device that supports it; full fp32 otherwise (CPU)."""
    cuda = torch.cuda.is_available()
    return {"bf16": bool(cuda and torch.cuda.is_bf16_supported()), "fp16": False, "use_cpu": not cuda}


def trainer_arguments(cfg: TrainConfig, folder: Path, lr: float, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments shared by TRL's SFTConfig and DPOConfig."""
    return {
        "output_dir": str(folder), "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": lr, "num_train_epochs": cfg.epochs, "max_steps": cfg.max_steps or -1,
        "seed": cfg.seed, "data_seed": cfg.seed, "logging_steps": 1, "logging_first_step": True,
        "save_strategy": "steps" if cfg.save_steps else "epoch", "save_steps": cfg.save_steps or 500,
        "save_total_limit": cfg.save_total_limit, "eval_strategy": "epoch" if has_eval else "no",
        "report_to": [], "push_to_hub": False, "dataloader_num_workers": 0,
        "disable_tqdm": True, "max_length": cfg.max_length, **precision(),
    }


@contextmanager
def quiet_training() -> Iterator[None]:
    """No per-map / per-shard tqdm bars from datasets and transformers (our callback reports progress), and
    none of their deprecation chatter (``is_gradient_checkpointing``, PEFT's missing-config note on save)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="Could not find a config file", category=UserWarning)
        yield


class Meter:
    """Training tokens (attention-mask sum of every training micro-batch) and where the time went.

    ``step_seconds``: time inside optimizer steps (forward, backward, update), without evaluation,
    checkpoint saving and logging; ``first_*``: the first step of this process (allocation and
    page-in warm-up), left out of the steady rate.
    """

    def __init__(self) -> None:
        self.tokens = 0
        self.eval_seconds = 0.0
        self.step_seconds = 0.0
        self.steps = 0
        self.first_tokens = 0
        self.first_seconds = 0.0
        self._begin = 0.0
        self._tokens_at_begin = 0

    def count(self, inputs: Any) -> None:
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if mask is not None:
            self.tokens += int(mask.sum())

    def step_begin(self) -> None:
        self._begin, self._tokens_at_begin = time.perf_counter(), self.tokens

    def step_end(self) -> None:
        seconds = time.perf_counter() - self._begin
        if self.steps == 0:
            self.first_tokens, self.first_seconds = self.tokens - self._tokens_at_begin, seconds
        self.step_seconds += seconds
        self.steps += 1


def callbacks(log: Log, meter: Meter) -> list[Any]:
    """Progress lines through ``log``, step timing into ``meter`` and a checkpoint at the last step."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.every = 1

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = time.perf_counter()
            self.every = max(1, int(state.max_steps) // 10)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            meter.step_begin()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            step, total = int(state.global_step), int(state.max_steps)
            if "eval_loss" in logs:
                log(f"  step {step}/{total}: eval loss {logs['eval_loss']:.4f}" if total else
                    f"  before training: eval loss {logs['eval_loss']:.4f}")
            elif "loss" in logs and (step % self.every == 0 or step in (1, total)):
                log(f"  step {step}/{total}: loss {float(logs['loss']):.4f} "
                    f"({time.perf_counter() - self.started:.0f} s)")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            meter.step_end()
            if state.global_step >= state.max_steps:
                control.should_save = True

    return [Progress()]


def drop_printer(trainer: Any) -> None:
    """Remove the callback that prints every log dict (our Progress callback reports instead)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def metered(trainer_cls: Any, meter: Meter) -> Any:
    """A subclass of a Trainer class that counts training tokens and evaluation time into ``meter``."""

    class Metered(trainer_cls):  # a Trainer class chosen at run time
        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            meter.count(args[1] if len(args) > 1 else kwargs.get("inputs"))
            return super().training_step(*args, **kwargs)

        def evaluate(self, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                meter.eval_seconds += time.perf_counter() - start

    Metered.__name__ = f"Metered{trainer_cls.__name__}"
    return Metered


def timed_train(trainer: Any, meter: Meter, checkpoint: str | None) -> tuple[Any, float]:
    """``trainer.train``; returns its output and its seconds with in-training evaluation excluded."""
    eval_before = meter.eval_seconds
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    return output, max(1e-9, time.perf_counter() - start - (meter.eval_seconds - eval_before))


def last_logged(history: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The last value of ``key`` in the trainer's log history."""
    for entry in reversed(history):
        if key in entry:
            return float(entry[key])
    return None


def speed_metrics(meter: Meter, seconds: float, wall: float) -> dict[str, Any]:
    """Training speed: ``train_tokens_per_s`` = tokens / training time (evaluation excluded, checkpoint saves
    included); ``step_tokens_per_s`` = tokens / time inside optimizer steps; ``steady_tokens_per_s`` the same
    without the first (warm-up) step, when there was more than one."""

    def rate(tokens: int, secs: float) -> float:
        return round(tokens / secs, 1) if tokens and secs > 0 else 0.0

    steady = (rate(meter.tokens - meter.first_tokens, meter.step_seconds - meter.first_seconds)
              if meter.steps > 1 else rate(meter.tokens, meter.step_seconds))
    return {"train_tokens": meter.tokens, "train_seconds": round(seconds, 3), "wall_seconds": round(wall, 3),
            "train_tokens_per_s": rate(meter.tokens, seconds),
            "step_tokens_per_s": rate(meter.tokens, meter.step_seconds), "steady_tokens_per_s": steady}
