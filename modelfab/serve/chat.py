"""OpenAI-compatible routes of the serve app: ``POST /v1/chat/completions`` (with server-sent events).

The models, their shared bases and adapter switching live in :mod:`modelfab.serve.chat_host`; these routes
resolve a request to a hosted entry, run generation in the host's thread pool (never on the event loop)
and stream each piece of text as soon as the model produces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from modelfab.core.errors import ModelfabError
from modelfab.llm.models import (
    ContextLengthError,
)
from modelfab.serve.inputs import ApiError
from modelfab.serve.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatInfo,
    ChatMessageOut,
    ChatRequest,
    ErrorBody,
    Usage,
)

if TYPE_CHECKING:
    from modelfab.serve.state import ServeState

from modelfab.serve.chat_host import (
    CHAT_PATH,
    EMBEDDINGS_PATH,
    ChatEntry,
    Completion,
    Kind,
    log,
)

# --- routes ---

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "A chat.completion object; with stream=true, text/event-stream of chat.completion.chunk "
                         "objects (`data: {...}` lines) ending with `data: [DONE]`.",
          "content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}}},
}


def state_of(request: Request) -> ServeState:
    st: ServeState = request.app.state.serve
    return st


async def resolve(st: ServeState, name: str, kind: Kind, principal: Any) -> ChatEntry:
    """The served entry ``name`` names, usable for ``kind`` by ``principal`` (404 / 403 / 400 otherwise)."""
    if not st.ready:
        raise ApiError(503, "not_ready", f"models are {st.status}; see /readyz")
    if "@" in name:  # an alias: resolved in the registry now
        entry = await asyncio.get_running_loop().run_in_executor(st.prep_executor, st.chat.find, name)
    else:
        entry = st.chat.find(name)
    if entry is None:
        if name in st.index:
            raise ApiError(400, "not_a_chat_model",
                           f"model {name!r} is a scenario model; use POST /v1/models/{name}:predict")
        raise ApiError(404, "not_found", f"model {name!r} is not served here; see GET /v1/models")
    if not principal.in_scope(entry.names):
        raise ApiError(403, "forbidden", f"this key may not use model {name!r}")
    if kind == "chat" and entry.plan.kind != "chat":
        raise ApiError(400, "not_a_chat_model", f"model {name!r} is a text encoder; use POST {EMBEDDINGS_PATH}")
    return entry


@dataclass
class _Job:
    """A checked chat request, ready to generate."""

    entry: ChatEntry
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    started: float
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def start(self, st: ServeState, on_piece: Callable[[str], None] | None = None) -> asyncio.Future[Completion]:
        """Generate in the host's pool (the caller has :meth:`ChatHost.admit`-ted it).

        Whatever happens to the client, the generation's end releases the pending slot and records the
        request (status 200 and its tokens, or the error) in the metrics.
        """
        host, loop = st.chat, asyncio.get_running_loop()

        def work() -> Completion:
            try:
                return host.generate(self.entry, self.messages, self.max_tokens, self.temperature, self.top_p,
                                     self.seed, self.started, on_piece)
            finally:
                _call_soon(loop, host.release)

        def done(f: asyncio.Future[Completion]) -> None:
            exc = None if f.cancelled() else f.exception()
            if f.cancelled():
                status = "cancelled"
            elif exc is None:
                status = "200"
                _record(st, self.entry, f.result())
            else:
                status = str(exc.http_status) if isinstance(exc, ModelfabError) else "error"
            st.metrics.chat_requests.labels(self.entry.ref, status).inc()

        future = loop.run_in_executor(host.executor, work)
        future.add_done_callback(done)
        return future

    def chunk(self, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.entry.ref,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the app is shutting down
        loop.call_soon_threadsafe(fn, *args)


def _usage(c: Completion) -> Usage:
    return Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                 total_tokens=c.prompt_tokens + c.completion_tokens)


def _record(st: ServeState, entry: ChatEntry, c: Completion) -> None:
    st.metrics.observe_generation(entry.ref, c.prompt_tokens, c.completion_tokens, c.first_token_s, c.generation_s)
    entry.counters["requests"] += 1
    entry.counters["prompt_tokens"] += c.prompt_tokens
    entry.counters["completion_tokens"] += c.completion_tokens


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


def _stream(st: ServeState, job: _Job, include_usage: bool) -> AsyncIterator[str]:
    """Start the generation now and return its server-sent events (each text piece as soon as it exists)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    future = job.start(st, lambda piece: _call_soon(loop, queue.put_nowait, piece))
    future.add_done_callback(lambda _: queue.put_nowait(None))  # after every piece: they were queued first

    async def events() -> AsyncIterator[str]:
        yield _sse(job.chunk({"role": "assistant", "content": ""}))
        while (piece := await queue.get()) is not None:
            yield _sse(job.chunk({"content": piece}))
        try:
            done = await asyncio.shield(future)
        except ModelfabError as exc:  # the response has started: report in the stream
            yield _sse({"error": {"code": "invalid_request", "message": str(exc)}})
            return
        except Exception as exc:
            log.error("chat generation failed: %s: %s", type(exc).__name__, exc)
            yield _sse({"error": {"code": "internal", "message": f"generation failed ({type(exc).__name__})"}})
            return
        yield _sse(job.chunk({}, done.finish_reason))
        if include_usage:
            yield _sse({**job.chunk({}), "choices": [], "usage": _usage(done).model_dump()})
        yield _sse("[DONE]")

    return events()


@router.post(CHAT_PATH, response_model=ChatCompletion, responses={**ERRORS, **STREAM_DOC},
             summary="Chat completion (OpenAI-compatible; stream=true for server-sent events)")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    st = state_of(request)
    label = "-"
    try:
        principal = st.authorize(request.headers, "predict")
        entry = await resolve(st, body.model, "chat", principal)
        label = entry.ref
        requested = body.requested_tokens()
        cap = st.settings.chat_max_tokens
        if requested is not None and requested > cap:
            raise ApiError(422, "invalid_request", f"max_tokens: {requested} is over this server's limit of {cap}")
        started = time.perf_counter()
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        loop = asyncio.get_running_loop()
        try:
            _, max_tokens = await loop.run_in_executor(st.prep_executor, st.chat.budget, entry, messages, requested)
        except ContextLengthError as exc:
            raise ApiError(413, "context_length_exceeded", str(exc)) from None
        st.chat.admit()
    except ModelfabError as exc:
        st.metrics.chat_requests.labels(label, str(exc.http_status)).inc()
        raise
    job = _Job(entry, messages, max_tokens, 1.0 if body.temperature is None else body.temperature,
               1.0 if body.top_p is None else body.top_p, body.seed, started)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(st, job, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    done = await asyncio.shield(job.start(st))  # a client that leaves does not cancel the record
    m = entry.plan.model
    info = ChatInfo(model_id=m.id, model_version=m.version, time_to_first_token_ms=round(done.first_token_s * 1e3, 3),
                    latency_ms=round(done.total_s * 1e3, 3), tokens_per_s=round(done.tokens_per_s, 3))
    choice = ChatChoice(index=0, message=ChatMessageOut(content=done.text), finish_reason=done.finish_reason)
    return ChatCompletion(id=job.id, created=job.created, model=entry.ref, choices=[choice], usage=_usage(done),
                          modelfab=info)
