"""The app factory: ``create_app(settings, models)`` -> a FastAPI app serving registered models.

Scenario models answer ``POST /v1/models/{name}:predict``; chat models (chat L2s, L0/L1 causal LMs)
``POST /v1/chat/completions`` and text encoders ``POST /v1/embeddings`` (:mod:`modelfab.serve.chat`).
Models are planned (resolved, runtime picked, deployability checked) when the app is created, so a
bad reference fails at once; they are loaded and warmed in the background after start, and
``/readyz`` turns 200 when they are ready. Every error is ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelfab.core.errors import ConfigError, ConflictError, DataError, ModelfabError, NotFoundError
from modelfab.serve import routes
from modelfab.serve.chat import router as chat_router
from modelfab.serve.chat_host import split_models, start_chat_deployments
from modelfab.serve.config import ServeSettings
from modelfab.serve.deployments import add_counters, start_deployments, stop_deployments
from modelfab.serve.embeddings import router as embeddings_router
from modelfab.serve.inputs import ApiError
from modelfab.serve.runtime import plan_model
from modelfab.serve.state import ServeState, load_in_background
from modelfab.store.store import Store, open_store

log = logging.getLogger("modelfab.serve")
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                422: "invalid_request", 429: "too_many_requests", 503: "not_ready"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _code(exc: ModelfabError) -> str:
    if isinstance(exc, ApiError):
        return exc.code
    for kind, code in ((NotFoundError, "not_found"), (DataError, "invalid_input"), (ConflictError, "conflict"),
                       (ConfigError, "invalid_request")):
        if isinstance(exc, kind):
            return code
    return STATUS_CODES.get(exc.http_status, "error")


class Guard:
    """Pure ASGI middleware: body size limit (413 before the app reads it) and request metrics."""

    def __init__(self, app: ASGIApp, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.state.settings.max_body_bytes
        started = time.perf_counter()
        status = {"code": 500}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > limit):
                await self._drain(receive, int(length) if length.isdigit() else 0, limit)
                resp = error_response(413, "payload_too_large", f"request body exceeds {limit} bytes")
                await resp(scope, receive, send_wrapper)
                return
            seen = 0

            async def limited() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
                return message

            await self.app(scope, limited, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.state.metrics.requests.labels(template, scope.get("method", ""), str(status["code"])).inc()
            self.state.metrics.request_latency.labels(template).observe(time.perf_counter() - started)

    @staticmethod
    async def _drain(receive: Receive, length: int, limit: int) -> None:
        """Read and drop a too-large body (up to 16x the limit) so the client sees the 413, not a reset."""
        if length > 16 * limit:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelfabError)
    async def _mf(_: Request, exc: ModelfabError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return error_response(exc.http_status, _code(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error_response(422, "invalid_request", f"{where}: {first.get('msg')}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), str(exc.detail),
                              dict(exc.headers or {}) or None)

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return error_response(422, "invalid_request", f"body is not valid JSON: {exc.msg}")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


def create_app(
    settings: ServeSettings | None = None,
    models: Sequence[str] = (),
    *,
    store: Store | None = None,
    deployments: dict[str, str] | None = None,
    base_url: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``models`` (ids or ``name@alias``).

    ``deployments`` (ref -> deployment id) are created by the caller (the CLI, once for all
    workers); without them the app creates its own rows at start. Either way they are marked
    stopped at shutdown.
    """
    settings = settings or ServeSettings()
    if not models:
        raise ConfigError("models: serve at least one model")
    own_store = store is None
    st = store or open_store()
    refs = list(dict.fromkeys(models))
    scenario_refs, chat_plans = split_models(st, refs)
    plans = [plan_model(st, ref, settings.runtime) for ref in scenario_refs]
    state = ServeState(settings, st, plans, chat_plans)
    url = base_url or f"http://{settings.host}:{settings.port}"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        owned = deployments is None
        state.deployments = ({**start_deployments(st, plans, url), **start_chat_deployments(st, chat_plans, url)}
                             if owned else dict(deployments or {}))
        state.recorder.start()
        loader = asyncio.get_running_loop().create_task(load_in_background(state))
        try:
            yield
        finally:
            loader.cancel()
            await state.stop_runners()
            state.recorder.stop()
            counters = {s.deployment_id: dict(s.counters) for s in state.served.values() if s.deployment_id}
            counters.update(state.chat.counters())
            try:
                add_counters(st, counters)
                # Stopped here, not only by the CLI: uvicorn re-raises SIGTERM after a graceful
                # shutdown, so code after uvicorn.run() does not run.
                stop_deployments(st, list(state.deployments.values()))
            finally:
                if own_store:
                    st.close()

    app = FastAPI(
        title="modelfab serving",
        version="1",
        description="Scenario, chat and embedding models of the modelfab registry (chat and embeddings "
                    "OpenAI-compatible). Send `Authorization: Bearer <key>`.",
        lifespan=lifespan,
    )
    app.state.serve = state
    app.include_router(chat_router)
    app.include_router(embeddings_router)
    app.include_router(routes.router)
    _handlers(app)
    from modelfab.console.mount import mount_console

    mount_console(app, lambda: st, auth=settings.auth)  # the web console at /console, API at /api/console
    app.add_middleware(Guard, state=state)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: the CLI passes settings, models and deployments as JSON."""
    import os

    spec: dict[str, Any] = json.loads(os.environ["MODELFAB_SERVE_SPEC"])
    return create_app(ServeSettings.model_validate(spec["settings"]), spec["models"],
                      deployments=spec.get("deployments"), base_url=spec.get("base_url"))
