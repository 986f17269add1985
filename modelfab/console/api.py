"""The console's JSON API, ``/api/console/...``: every route needs an API key (viewer reads; annotator saves
labels; engineer promotes models and approves, resumes or cancels pipeline runs). Errors are
``{"error": {"code", "message"}}`` with 401/403/404/409/422."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelfab.console import datasets_api, llm_api, models_api, reports_api, runs_api
from modelfab.console.context import Caller, Ctx

PREFIX = "/api/console"
router = APIRouter(prefix=PREFIX, tags=["console"])


@router.get("/whoami")
def whoami(ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """The signed-in key: id, name and role (the browser shows what the role may do)."""
    return {"key_id": principal.key_id, "name": principal.name, "role": principal.role,
            "models": list(principal.models) if principal.models is not None else None, "auth": ctx.auth}


for sub in (models_api.router, datasets_api.router, runs_api.router, reports_api.router, llm_api.router):
    router.include_router(sub)
