"""Deployment rows: one per served model, created at start, marked stopped (with counters) at shutdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from modelfab.serve.runtime import Plan
from modelfab.store.schema import Deployment
from modelfab.store.store import Store, new_id


def start_deployments(store: Store, plans: Sequence[Plan], base_url: str) -> dict[str, str]:
    """Create an ``active`` deployment per plan; returns ref -> deployment id."""
    ids: dict[str, str] = {}
    with store.transaction() as s:
        for plan in plans:
            dep = Deployment(
                id=new_id("d"),
                model_id=plan.model.id,
                endpoint=f"{base_url.rstrip('/')}/v1/models/{plan.ref}:predict",
                runtime=plan.runtime,
                status="active",
                counters={"ref": plan.ref, "source_model": plan.source.id},
            )
            s.add(dep)
            ids[plan.ref] = dep.id
    return ids


def add_counters(store: Store, counters: Mapping[str, Mapping[str, int]]) -> None:
    """Add this process's counters to the deployments' (workers add theirs in turn)."""
    with store.transaction() as s:
        for dep_id, values in counters.items():
            dep = s.get(Deployment, dep_id)
            if dep is None:
                continue
            merged: dict[str, Any] = dict(dep.counters or {})
            for key, n in values.items():
                merged[key] = int(merged.get(key, 0)) + int(n)
            dep.counters = merged


def stop_deployments(store: Store, ids: Sequence[str]) -> None:
    with store.transaction() as s:
        for dep_id in ids:
            dep = s.get(Deployment, dep_id)
            if dep is not None:
                dep.status = "stopped"


def list_deployments(store: Store, status: str | None = None) -> list[Deployment]:
    with store.session() as s:
        q = select(Deployment).order_by(Deployment.created_at)
        if status:
            q = q.where(Deployment.status == status)
        return list(s.scalars(q).all())
