"""Model steps: ``adapt`` (L0 -> L1), ``tune`` (-> L2), ``evaluate``, ``export`` and ``extract``."""

from __future__ import annotations

import shutil
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from modelfab.core.errors import ConfigError, ModelfabError
from modelfab.flow.steps.base import Step, StepContext, StepParams, register


class StepFailed(ModelfabError):
    """A step ran but its result may not be used (e.g. a failed parity record)."""


class AdaptParams(StepParams):
    base: str
    data: str
    name: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import fields as dc_fields

        from modelfab.adapt.config import AdaptConfig

        unknown = sorted(set(v) - {f.name for f in dc_fields(AdaptConfig)})
        if unknown:
            raise ValueError(f"unknown adapt field(s) {', '.join(unknown)}")
        return v


@register("adapt")
class AdaptStep(Step):
    """Continue self-supervised training of an L0 on unlabeled industry data: an L1."""

    Params = AdaptParams
    kinds: ClassVar[dict[str, str]] = {"base": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"model": "model"}
    summary = "adapt an L0 on unlabeled data into an L1 (SimCLR/BYOL/SimCSE/CLM), resumable"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, AdaptParams)
        from modelfab.adapt.api import adapt_model
        from modelfab.adapt.config import AdaptConfig

        cfg = _adapt_config(AdaptConfig, params.config)
        res = adapt_model(ctx.store, params.base, params.data, params.name, cfg, resume=ctx.resume, log=ctx.log)
        return {"model": res.model.id}


def _adapt_config(cls: Any, fields: dict[str, Any]) -> Any:
    """``AdaptConfig`` from a ``with.config`` mapping; unknown fields name themselves."""
    from dataclasses import fields as dc_fields

    from modelfab.adapt.augment import AugmentConfig

    known = {f.name for f in dc_fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"config: unknown adapt field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = dict(fields)
    if isinstance(values.get("augment"), dict):
        values["augment"] = AugmentConfig(**values["augment"])
    return cls(**values)


class TuneParams(StepParams):
    base: str
    data: str
    name: str = Field(min_length=1)
    method: Literal["probe", "lora", "partial", "full"] = "probe"
    shots: int | None = Field(default=None, ge=1)
    labels: str | None = None
    seed: int = 0
    auto: bool = False
    budget_s: float = Field(default=900.0, gt=0)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        from modelfab.tune.config import TuneConfig

        unknown = sorted(set(v) - set(TuneConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown tune field(s) {', '.join(unknown)}")
        return v


@register("tune")
class TuneStep(Step):
    """Train an L2 scenario model from an L0/L1 base (checkpointed: a resumed step continues its epochs)."""

    Params = TuneParams
    kinds: ClassVar[dict[str, str]] = {"base": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"model": "model", "metrics": "mapping"}
    summary = "train an L2 (probe / lora / partial / full, few-shot, --auto) with lineage"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, TuneParams)
        from modelfab.tune import TuneConfig
        from modelfab.tune.api import tune
        from modelfab.tune.auto import auto_tune

        fields = {**params.config, "method": params.method, "shots": params.shots, "seed": params.seed}
        if params.labels:
            fields["labels"] = params.labels
        cfg = TuneConfig.model_validate(fields)
        run_dir = ctx.work_dir / "checkpoints"
        if not ctx.resume and run_dir.exists():
            shutil.rmtree(run_dir)
        if params.auto:
            res = auto_tune(ctx.store, base=params.base, data=params.data, name=params.name, cfg=cfg,
                            budget_s=params.budget_s)
            model, metrics = res.model, dict(res.best.val_metrics)
        else:
            out = tune(ctx.store, base=params.base, data=params.data, name=params.name, cfg=cfg,
                       run_dir=run_dir, resume=ctx.resume)
            model, metrics = out.model, dict(out.val_metrics)
            if out.trained.outcome.resumed_from is not None:
                ctx.record["resumed_from_epoch"] = out.trained.outcome.resumed_from
                ctx.log(f"resumed from the checkpoint of epoch {out.trained.outcome.resumed_from}")
        ctx.log(f"registered {model.name}:{model.version} ({model.id}) val {metrics}")
        return {"model": model.id, "metrics": {"val": metrics}}


class EvaluateParams(StepParams):
    model: str
    data: str
    compare: list[str] = Field(default_factory=list)


@register("evaluate")
class EvaluateStep(Step):
    """Evaluate an L2 on a split (default test): metrics, curves, an HTML report; metrics go on the model."""

    Params = EvaluateParams
    kinds: ClassVar[dict[str, str]] = {"model": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"metrics": "mapping", "report": "text"}
    summary = "evaluate an L2 on DATASET@v[:split]: metrics, plots, HTML report"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, EvaluateParams)
        from modelfab.evaluate.model_eval import evaluate_model

        ev = evaluate_model(ctx.store, params.model, params.data, out_dir=ctx.work_dir / "report",
                            compare=params.compare)
        metrics = _scalars(ev.result.to_dict()["metrics"])
        ctx.log(f"{ev.split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return {"metrics": {ev.split: metrics}, "report": str(ev.report_dir / "report.html")}


def _scalars(d: dict[str, Any]) -> dict[str, float]:
    """The top-level numeric metrics (auroc, ap, accuracy, ece ...)."""
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class ExportParams(StepParams):
    model: str
    format: Literal["onnx", "torchscript"] = "onnx"
    data: str | None = None
    require_parity: bool = True


@register("export")
class ExportStep(Step):
    """Export an L2 to ONNX / TorchScript as a registered child with its parity record."""

    Params = ExportParams
    kinds: ClassVar[dict[str, str]] = {"model": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"model": "model", "parity": "mapping"}
    summary = "export to ONNX or TorchScript with an fp32 parity record"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, ExportParams)
        from modelfab.compress.export import export_model

        res = export_model(ctx.store, params.model, params.format, data=params.data)
        return _parity_outputs(ctx, res.model.id, res.parity, res.passed, params.require_parity)


class ExtractParams(StepParams):
    model: str
    method: str = "quantize"
    options: dict[str, Any] = Field(default_factory=dict)
    require_parity: bool = True


@register("extract")
class ExtractStep(Step):
    """Derive a smaller/faster child (catalog of extractors, e.g. static INT8) with a task-level parity record."""

    Params = ExtractParams
    kinds: ClassVar[dict[str, str]] = {"model": "model"}
    outputs: ClassVar[dict[str, str]] = {"model": "model", "parity": "mapping"}
    summary = "extract a compressed child model (quantize, ...) with a parity record"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, ExtractParams)
        from modelfab.compress.extract import extract

        res = extract(ctx.store, params.model, params.method, params.options)
        return _parity_outputs(ctx, res.model.id, res.parity, res.passed, params.require_parity)


def _parity_outputs(ctx: StepContext, model_id: str, parity: dict[str, Any], passed: bool,
                    required: bool) -> dict[str, Any]:
    ctx.log(f"child {model_id}: parity {parity.get('status')}")
    if required and not passed:
        reason = parity.get("reason") or parity.get("failures") or parity
        raise StepFailed(f"parity failed for {model_id}: {reason} (set require_parity: false to keep going)")
    return {"model": model_id, "parity": parity}
