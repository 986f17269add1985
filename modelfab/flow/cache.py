"""Step-level cache: key = (step, resolved inputs with artifact identities, code hash, fingerprint)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from modelfab.core.errors import ModelfabError
from modelfab.flow.steps.base import Step, StepContext, StepParams, code_hash
from modelfab.store.schema import PipelineStep
from modelfab.store.store import Store


def identity(store: Store, kind: str, value: Any) -> Any:
    """What a reference points at, so that a moved alias or a new version changes the key."""
    if not isinstance(value, str):
        return value
    if kind == "model":
        return store.get_model(value).id
    if kind == "dataset":
        ref, _, split = value.partition(":")
        dv = store.get_dataset_version(ref)
        return f"{dv.dataset.name}@{dv.version}#{dv.content_hash}:{split}"
    return value


def cache_key(store: Store, uses: str, cls: type[Step], params: StepParams, ctx: StepContext) -> str:
    """A sha256 over everything that decides the step's result."""
    dumped = params.model_dump(mode="json")
    resolved = {k: identity(store, cls.kinds[k], v) if k in cls.kinds else v for k, v in dumped.items()}
    payload = {"uses": uses, "params": resolved, "code": code_hash(cls), "fingerprint": cls().fingerprint(ctx, params)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _outputs_exist(store: Store, cls: type[Step], outputs: dict[str, Any]) -> bool:
    for name, kind in cls.outputs.items():
        if name not in outputs:
            return False
        try:
            if kind == "model":
                store.get_model(outputs[name])
            elif kind == "dataset":
                store.get_dataset_version(str(outputs[name]).partition(":")[0])
        except ModelfabError:
            return False
    return True


def find_cached(store: Store, key: str, cls: type[Step]) -> PipelineStep | None:
    """The newest finished step with this key whose outputs still exist."""
    with store.session() as s:
        rows = s.scalars(
            select(PipelineStep)
            .where(PipelineStep.cache_key == key, PipelineStep.status == "succeeded")
            .order_by(PipelineStep.ended_at.desc())
            .limit(5)
        ).all()
    return next((r for r in rows if _outputs_exist(store, cls, r.outputs)), None)
