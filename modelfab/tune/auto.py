"""``tune --auto``: rank the strategy pool for this dataset, try the best recipes within a time
budget, refine the winner's hyper-parameters with Optuna, register the best model."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfab.core.errors import ConfigError
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.tune.api import TrainedL2, dataset_meta, recorded_run, register_l2, train_l2
from modelfab.tune.config import TuneConfig
from modelfab.tune.prior import reuse_patch_vectors
from modelfab.tune.strategies import STRATEGIES, Ranked, rank


@dataclass
class Trial:
    recipe: str
    score: float
    seconds: float
    run_id: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class AutoResult:
    model: Model
    ranking: list[Ranked]
    trials: list[Trial]
    best: TrainedL2


def _optuna_space(trial: Any, cfg: TuneConfig) -> dict[str, Any]:
    if cfg.method == "probe":
        return {"head": "mlp", "hidden": trial.suggest_categorical("hidden", [64, 128, 256, 512])}
    return {
        "lr": trial.suggest_float("lr", cfg.lr / 3, cfg.lr * 3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
    }


def auto_tune(
    store: Store,
    *,
    base: str,
    data: str,
    name: str,
    cfg: TuneConfig,
    budget_s: float = 900.0,
    top: int = 3,
    optuna_trials: int = 4,
    ground_truth: bool = False,
    run_dir: Path | None = None,
    reuse_prior_vectors: bool = True,
) -> AutoResult:
    """Try the ``top`` ranked recipes (and Optuna refinements of the best) within ``budget_s``.

    ``reuse_prior_vectors``: trials that fit the same anomaly prior share one pass over the unlabeled
    pool (:func:`~modelfab.tune.prior.reuse_patch_vectors`); False recomputes it per trial.
    """
    if top < 1:
        raise ConfigError("top: try at least one recipe")
    with reuse_patch_vectors() if reuse_prior_vectors else contextlib.nullcontext():
        return _search(store, base, data, name, cfg, budget_s, top, optuna_trials, ground_truth)


def _search(
    store: Store, base: str, data: str, name: str, cfg: TuneConfig, budget_s: float, top: int, optuna_trials: int,
    ground_truth: bool,
) -> AutoResult:
    t0 = time.perf_counter()
    meta = dataset_meta(store, base, data, cfg, ground_truth)
    ranking = rank(store, meta)
    trials: list[Trial] = []
    best: TrainedL2 | None = None
    best_run = ""

    def attempt(recipe: str, trial_cfg: TuneConfig, overrides: dict[str, Any]) -> TrainedL2:
        nonlocal best, best_run
        start = time.perf_counter()
        with recorded_run(store, trial_cfg, base, data, recipe) as record:
            trained = train_l2(store, base=base, data=data, cfg=trial_cfg, ground_truth=ground_truth, recipe=recipe)
            record.done(trained, None)
        trials.append(Trial(recipe, trained.score, time.perf_counter() - start, record.run_id, overrides))
        if best is None or trained.score > best.score:
            best, best_run = trained, record.run_id
        return trained

    for ranked in ranking[:top]:
        if trials and time.perf_counter() - t0 > budget_s:
            break
        attempt(ranked.recipe, STRATEGIES.get(ranked.recipe).config(cfg), {})
    if best is None:
        raise ConfigError("auto: no recipe could be tried")
    winner = best
    left = budget_s - (time.perf_counter() - t0)
    if optuna_trials > 0 and left > 0 and not (winner.config.method == "probe" and winner.config.head == "mlp"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))

        scores: dict[str, float] = {}  # settings already trained -> score

        def objective(trial: optuna.Trial) -> float:
            overrides = _optuna_space(trial, winner.config)
            tried = json.dumps(overrides, sort_keys=True)
            if tried in scores:  # TPE repeats categorical choices (a probe's MLP width): no retraining
                return scores[tried]
            trial_cfg = TuneConfig.model_validate({**winner.config.model_dump(), **overrides})
            # an MLP-head refinement counts as probe-mlp, unless it carries the prior (no such recipe)
            mlp = "probe-mlp" if trial_cfg.prior == "none" else None
            recipe = winner.recipe if trial_cfg.head == winner.config.head else mlp
            scores[tried] = attempt(recipe or trial_cfg.method, trial_cfg, overrides).score
            return scores[tried]

        study.optimize(objective, n_trials=optuna_trials, timeout=left)
    model, _ = register_l2(store, best, name, best_run)
    return AutoResult(model, ranking, trials, best)
