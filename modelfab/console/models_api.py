"""Console routes for models: the lineage tree, a model's card, side-by-side comparison, promotion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from modelfab.console.context import Caller, Ctx, require, who
from modelfab.serve.inputs import ApiError
from modelfab.store.models import LineageNode, get_model, lineage, model_card, set_alias
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.schema import LatencyProfile, Model, ModelAlias
from modelfab.store.store import Store

router = APIRouter()


def _aliases(store: Store) -> dict[str, list[str]]:
    """model id -> ["name@alias", ...]."""
    out: dict[str, list[str]] = {}
    with store.session() as s:
        for row in s.scalars(select(ModelAlias).order_by(ModelAlias.alias)).all():
            out.setdefault(row.model_id, []).append(f"{row.name}@{row.alias}")
    return out


def _brief(m: Model, aliases: dict[str, list[str]]) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "version": m.version, "tier": m.tier, "task": m.task,
            "parent": m.parent_id, "aliases": aliases.get(m.id, []), "created_at": m.created_at.isoformat()}


def _node(n: LineageNode, aliases: dict[str, list[str]]) -> dict[str, Any]:
    return {**_brief(n.model, aliases), "dataset": n.dataset, "children": [_node(c, aliases) for c in n.children]}


@router.get("/models")
def models_tree(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The lineage forest L0 -> L1 -> L2 (each node with its aliases and children)."""
    st = ctx.store
    aliases = _aliases(st)
    return {"tree": [_node(n, aliases) for n in lineage(st)]}


def flatten(value: Any, prefix: str = "", depth: int = 4) -> dict[str, Any]:
    """Nested metrics as ``a.b.c -> scalar`` (lists and deeper levels are shown as short text)."""
    if isinstance(value, dict) and depth > 0:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), depth - 1))
        return out
    if isinstance(value, int | float | str | bool) or value is None:
        return {prefix: value}
    text = str(value)
    return {prefix: text if len(text) <= 80 else text[:77] + "..."}


def _profiles(store: Store, model_id: str) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(select(LatencyProfile).where(LatencyProfile.model_id == model_id)
                         .order_by(LatencyProfile.runtime, LatencyProfile.batch)).all()
    return [{"device": r.device, "runtime": r.runtime, "batch": r.batch, "threads": r.threads, "p50_ms": r.p50_ms,
             "p95_ms": r.p95_ms, "throughput": r.throughput, "peak_memory_mb": r.peak_memory_mb, "size_mb": r.size_mb,
             "measured_at": r.measured_at.isoformat()} for r in rows]


def _parity(store: Store, m: Model) -> dict[str, Any]:
    from modelfab.compress.parity import deployable

    try:
        ok, reason = deployable(store, m)
    except Exception as exc:  # a model whose format cannot be read: show why, do not fail the card
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    return {"deployable": ok, "reason": reason, "record": (m.metrics or {}).get("parity")}


@router.get("/models/{ref}")
def model_detail(ref: str, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """One model: registry fields, card, metrics (nested and flat), config, latency profiles, parity."""
    st = ctx.store
    m = get_model(st, ref)
    parent = get_model(st, m.parent_id) if m.parent_id else None
    return {
        **_brief(m, _aliases(st)),
        "parent_name": f"{parent.name}:{parent.version}" if parent else None,
        "params": m.params, "trainable_params": m.trainable_params,
        "metrics": m.metrics or {}, "metrics_flat": flatten(m.metrics or {}),
        "config": m.config or {}, "architecture": m.architecture or {},
        "card": model_card(st, m.id), "profiles": _profiles(st, m.id), "parity": _parity(st, m),
    }


@router.get("/compare")
def compare(a: str, b: str, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """Two models side by side: one row per metric (flattened), plus the main registry fields."""
    st = ctx.store
    ma, mb = get_model(st, a), get_model(st, b)
    fa, fb = flatten(ma.metrics or {}), flatten(mb.metrics or {})
    fields = {"tier": (ma.tier, mb.tier), "task": (ma.task, mb.task), "params": (ma.params, mb.params),
              "trainable_params": (ma.trainable_params, mb.trainable_params)}
    rows = [{"metric": k, "a": va, "b": vb} for k, (va, vb) in fields.items()]
    rows += [{"metric": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb))]
    return {"a": f"{ma.name}:{ma.version}", "b": f"{mb.name}:{mb.version}", "a_id": ma.id, "b_id": mb.id,
            "rows": rows}


class PromoteBody(BaseModel):
    alias: str = Field("production", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")


@router.post("/models/{ref}/promote")
def promote(ref: str, body: PromoteBody, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Point ``NAME@ALIAS`` at the model (engineer or above; a scoped key only within its models)."""
    require(principal, "engineer", "promote models")
    st = ctx.store
    m = get_model(st, ref)
    if not principal.in_scope({m.id, m.name, f"{m.name}:{m.version}", ref}):
        raise ApiError(403, "forbidden", f"key {principal.key_id} is not scoped to model {m.name}")
    with tracked_run(st, "promote", config={"model": m.id, "alias": body.alias, "by": who(principal),
                                             "via": "console"}) as run:
        set_alias(st, m.id, body.alias)
    finish_run(st, run.id, outputs={"alias": f"{m.name}@{body.alias}", "model": m.id})
    return {"model": m.id, "alias": f"{m.name}@{body.alias}", "by": who(principal)}
