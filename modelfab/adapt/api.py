"""``adapt``: L0 (or L1) + an unlabeled dataset version -> a registered L1 with lineage.

Checks the inputs first (known base, trainable, modality matches the data, enough items), then
trains with checkpoints under ``$MODELFAB_HOME/runs/adapt/<name>``, writes the loss curve PNG and
a JSON report there, and registers the adapted backbone as tier L1 (parent = the base model,
dataset version = the data it saw).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelfab.adapt.config import AdaptConfig
from modelfab.adapt.report import plot_losses
from modelfab.adapt.runner import TrainResult, train
from modelfab.core.errors import ConfigError, DataError
from modelfab.zoo.registry import load_base, register_backbone

if TYPE_CHECKING:
    from modelfab.store.schema import Model
    from modelfab.store.store import Store

MIN_ITEMS = 16
_MODALITY = {"vision": "image", "text": "text", "lm": "text"}


@dataclass
class AdaptResult:
    model: Model
    run_dir: Path
    train: TrainResult
    report: dict[str, Any]


def run_dir_for(store: Store, name: str) -> Path:
    return store.settings.home / "runs" / "adapt" / name


def _load_items(store: Store, data: str, modality: str, cfg: AdaptConfig) -> tuple[list[Any], Any]:
    dv = store.get_dataset_version(data)
    ds_modality = dv.dataset.modality
    if _MODALITY[modality] != ds_modality:
        raise ConfigError(f"data: {data} holds {ds_modality} items but the base is a {modality} model")
    rows = store.version_items(dv.id)
    if cfg.split is not None:
        rows = [r for r in rows if r.split == cfg.split]
    if cfg.max_items is not None and len(rows) > cfg.max_items:
        rows = random.Random(cfg.seed).sample(rows, cfg.max_items)
    if len(rows) < max(MIN_ITEMS, 4):
        where = f" in split {cfg.split!r}" if cfg.split else ""
        raise DataError(f"data: {data} has {len(rows)} items{where}; adaptation needs at least {MIN_ITEMS}")
    if ds_modality == "text":
        return [r.text or "" for r in rows], dv
    from modelfab.data.images import load_rgb

    return [load_rgb(store.artifacts.local_path(r.content_hash)) for r in rows], dv


def adapt_model(
    store: Store,
    base: str,
    data: str,
    name: str,
    cfg: AdaptConfig | None = None,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Any = None,
) -> AdaptResult:
    """Adapt ``base`` on ``data`` and register the result as L1 ``name``.

    ``progress``: an optional factory ``(description, total) -> advance(n)`` for progress bars.
    """
    cfg = cfg or AdaptConfig()
    if not name or "@" in name or ":" in name or "/" in name:
        raise ConfigError(f"name: {name!r} must be non-empty without '@', ':' or '/'")
    backbone, base_model = load_base(store, base)
    modality = backbone.input_spec.modality
    if getattr(backbone, "frozen", False):
        raise ConfigError(f"base {base!r} ({backbone.name}) is frozen (embed-only) and cannot be adapted")
    items, dv = _load_items(store, data, modality, cfg)
    if modality == "vision":
        if cfg.objective in ("simcse", "clm"):
            raise ConfigError(f"objective: {cfg.objective} is for text; vision takes simclr or byol")
        from modelfab.adapt.vision import VisionObjective

        objective: Any = VisionObjective(backbone, items, cfg, progress)
        objective.cache_path = run_dir_for(store, name) / "view-cache.safetensors"
    elif cfg.objective in ("simclr", "byol"):
        raise ConfigError(f"objective: {cfg.objective} is for images; text takes simcse (or clm for an LM)")
    elif modality == "lm" and cfg.objective in ("auto", "clm"):
        from modelfab.adapt.causal_lm import CausalLMObjective

        objective = CausalLMObjective(backbone, items, cfg)
    elif cfg.objective == "clm":
        raise ConfigError("objective: clm needs a causal LM base; sentence encoders take simcse")
    else:
        from modelfab.adapt.text import TextObjective

        objective = TextObjective(backbone, items, cfg)
    run_dir = run_dir_for(store, name)
    net_ids = {id(p) for p in backbone.module.parameters()}
    trainable = sum(p.numel() for p in objective.parameters() if id(p) in net_ids)  # heads excluded
    data_ref = f"{dv.dataset.name}@{dv.version}"
    log(f"adapting {base_model.name}:{base_model.version} on {data_ref} ({len(items)} items), "
        f"{trainable:,} trainable backbone parameters")
    tick = progress("training", cfg.steps) if progress else None
    state = {"done": 0}

    def on_step(step: int, loss: float) -> None:
        if tick is not None:
            tick(step - state["done"])
        state["done"] = step

    meta = {"base": base_model.id, "data": data_ref, "name": name}
    result = train(objective, cfg, run_dir, resume=resume, log=log, tick=on_step if tick else None, extra_meta=meta)
    adapted = objective.finalize()
    kind = getattr(objective, "objective", cfg.objective)
    png = plot_losses(result.losses, run_dir / "loss.png", title=f"{name}: {kind} loss")
    report = {
        "base": base_model.id, "data": data_ref, "items": len(items), "steps": result.steps_done,
        "stopped": result.stopped, "train_seconds": round(result.elapsed_s, 1),
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": sum(result.losses[-10:]) / max(1, len(result.losses[-10:])) if result.losses else None,
        "resumed_from": result.resumed_from, "trainable_params": trainable,
        "loss_curve": str(png), "config": cfg.to_dict(),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    model = register_backbone(
        store, adapted, name=name, tier="L1", parent=base_model.id, dataset_version=dv.id,
        config={"adapt": cfg.to_dict(), "backbone": dict(adapted.config)},
        metrics={k: report[k] for k in ("steps", "train_seconds", "first_loss", "final_loss", "items")},
        card={"adaptation": report, "loss_curve_png": store.artifacts.put_bytes(png.read_bytes())},
        trainable_params=trainable,
    )
    log(f"registered L1 {model.name}:{model.version} ({model.id}), parent {base_model.name}; loss curve {png}")
    return AdaptResult(model, run_dir, result, report)
