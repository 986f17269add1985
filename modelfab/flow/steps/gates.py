"""Gates and delivery: ``approve`` (a metric rule or a recorded manual approval) and ``deploy``."""

from __future__ import annotations

import operator
import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from modelfab.core.errors import ConfigError
from modelfab.flow.steps.base import Step, StepContext, StepParams, StepWaiting, register
from modelfab.flow.steps.model_steps import StepFailed

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$")


def parse_rule(rule: str) -> list[tuple[str, str, float]]:
    """``metrics.test.auroc >= 0.9 and metrics.test.ece < 0.1`` -> clauses (no eval, numbers only)."""
    clauses = []
    for part in re.split(r"\s+and\s+", rule.strip()):
        m = _CLAUSE.match(part)
        if not m:
            raise ConfigError(f"rule: {part.strip()!r} is not 'PATH OP NUMBER' (OP one of {', '.join(_OPS)})")
        clauses.append((m.group(1), m.group(2), float(m.group(3))))
    return clauses


def check_rule(rule: str, context: dict[str, Any]) -> tuple[bool, list[str]]:
    """Evaluate every clause against ``context``; returns (passed, one line per clause)."""
    ok, lines = True, []
    for path, op, bound in parse_rule(rule):
        value: Any = context
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                raise StepFailed(f"rule: {path} is not available (have: {', '.join(sorted(_flat(context)))})")
            value = value[part]
        if not isinstance(value, int | float):
            raise StepFailed(f"rule: {path} is {value!r}, not a number")
        passed = bool(_OPS[op](float(value), bound))
        ok = ok and passed
        lines.append(f"{path} = {float(value):.4f} {op} {bound:g}: {'pass' if passed else 'FAIL'}")
    return ok, lines


def _flat(d: Any, prefix: str = "") -> list[str]:
    if not isinstance(d, dict):
        return [prefix.rstrip(".")]
    out: list[str] = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.")
    return out


class ApproveParams(StepParams):
    model: str
    rule: str | None = None
    manual: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    alias: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ApproveParams:
        if self.rule is None and not self.manual:
            raise ValueError("give a rule (e.g. 'metrics.test.auroc >= 0.9') or manual: true")
        if self.rule is not None:
            parse_rule(self.rule)
        return self


@register("approve")
class ApproveStep(Step):
    """Promotion gate: a metric rule on the model's metrics (plus ``metrics:`` given), and/or a manual
    approval recorded with who and when (``modelfab runs approve``). On approval, ``alias`` is moved."""

    Params = ApproveParams
    cacheable = False
    kinds: ClassVar[dict[str, str]] = {"model": "model", "metrics": "mapping"}
    outputs: ClassVar[dict[str, str]] = {"model": "model", "approved_by": "text"}
    summary = "promotion gate: a metric rule or a recorded manual approval; moves an alias"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, ApproveParams)
        from modelfab.store.models import set_alias

        model = ctx.store.get_model(params.model)
        approved_by = "rule"
        if params.rule is not None:
            context = {"metrics": {**(model.metrics or {}), **params.metrics}}
            ok, lines = check_rule(params.rule, context)
            ctx.record["rule"] = {"rule": params.rule, "checks": lines}
            for line in lines:
                ctx.log(line)
            if not ok:
                raise StepFailed(f"approval rule failed for {model.name}:{model.version}: "
                                 + "; ".join(x for x in lines if x.endswith("FAIL")))
        if params.manual:
            decision = ctx.meta.get("approval")
            if not decision:
                raise StepWaiting(f"waiting for approval of {model.name}:{model.version} ({model.id}): "
                                  f"modelfab runs approve {ctx.run_id} --step {ctx.step} --by NAME [--reject]")
            if not decision.get("approved"):
                raise StepFailed(f"rejected by {decision.get('by')} at {decision.get('at')}: "
                                 f"{decision.get('comment') or 'no comment'}")
            approved_by = str(decision.get("by"))
        if params.alias:
            set_alias(ctx.store, model.id, params.alias)
            ctx.log(f"{model.name}@{params.alias} -> {model.id}")
        return {"model": model.id, "approved_by": approved_by}


class DeployParams(StepParams):
    model: str
    alias: str = "production"
    runtime: str = "auto"
    url: str = "http://127.0.0.1:8000"


@register("deploy")
class DeployStep(Step):
    """Check the model can be served (deployable parity, loads, answers a warm-up), point the alias at it
    and record a deployment (status ``ready``) that ``modelfab serve NAME@ALIAS`` brings up."""

    Params = DeployParams
    cacheable = False
    kinds: ClassVar[dict[str, str]] = {"model": "model"}
    outputs: ClassVar[dict[str, str]] = {
        "deployment": "deployment", "model": "model", "endpoint": "text", "runtime": "text",
    }
    summary = "check servability, move the alias and record a deployment"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, DeployParams)
        from modelfab.serve.runtime import load_models, plan_model
        from modelfab.store.models import set_alias
        from modelfab.store.schema import Deployment
        from modelfab.store.store import new_id

        source = ctx.store.get_model(params.model)
        ref = f"{source.name}@{params.alias}"
        if _is_language_model(source):
            return _deploy_chat(ctx, source, params)
        plan = plan_model(ctx.store, source.id, params.runtime)
        loaded = load_models(ctx.store, [plan], threads=1)[0]
        loaded.warmup()
        ctx.log(f"{plan.model.id} loads on {plan.runtime}: {plan.reason} ({type(loaded).__name__})")
        set_alias(ctx.store, source.id, params.alias)
        endpoint = f"{params.url.rstrip('/')}/v1/models/{ref}:predict"
        dep = Deployment(id=new_id("d"), model_id=plan.model.id, endpoint=endpoint, runtime=plan.runtime,
                         status="ready", counters={"ref": ref, "source_model": source.id, "run": ctx.run_id})
        with ctx.store.transaction() as s:
            s.add(dep)
        ctx.log(f"deployment {dep.id}: serve it with `modelfab serve {ref}`")
        return {"deployment": dep.id, "model": source.id, "endpoint": endpoint, "runtime": plan.runtime}


def _is_language_model(model: Any) -> bool:
    """Chat L2s and causal-LM backbones are served by the chat API, not the predict API."""
    return model.task == "chat" or (model.architecture or {}).get("modality") == "lm"


def _deploy_chat(ctx: StepContext, source: Any, params: DeployParams) -> dict[str, Any]:
    """Deploy a chat model: it loads (with its adapter) and answers a warm-up; the alias moves."""
    from modelfab.llm.models import load_chat_model
    from modelfab.store.models import set_alias
    from modelfab.store.schema import Deployment
    from modelfab.store.store import new_id

    if params.runtime not in ("auto", "torch"):
        raise ConfigError(f"runtime: chat models run on torch, not {params.runtime!r}")
    chat = load_chat_model(ctx.store, source.id)
    warm = chat.generate([{"role": "user", "content": "Hello"}], max_new_tokens=2)
    ctx.log(f"{source.id} loads on torch (base {chat.base.name}:{chat.base.version}); warm-up "
            f"{warm.total_s * 1000:.0f} ms")
    set_alias(ctx.store, source.id, params.alias)
    ref = f"{source.name}@{params.alias}"
    endpoint = f"{params.url.rstrip('/')}/v1/chat/completions"
    dep = Deployment(id=new_id("d"), model_id=source.id, endpoint=endpoint, runtime="torch", status="ready",
                     counters={"ref": ref, "source_model": source.id, "run": ctx.run_id, "api": "chat"})
    with ctx.store.transaction() as s:
        s.add(dep)
    ctx.log(f"deployment {dep.id}: serve it with `modelfab serve {ref}` (OpenAI-compatible chat API, model {ref!r})")
    return {"deployment": dep.id, "model": source.id, "endpoint": endpoint, "runtime": "torch"}
