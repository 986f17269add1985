"""The REST routes: predict, models, feedback, promote, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from modelfab.serve.feedback import record_feedback
from modelfab.serve.inputs import ApiError, RawInput, from_files, from_json
from modelfab.serve.recorder import PredictionRecord
from modelfab.serve.schemas import (
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    ModelCard,
    ModelList,
    ModelRef,
    PredictionOut,
    PredictResponse,
    PromoteRequest,
    PromoteResponse,
)
from modelfab.serve.state import Served, ServeState
from modelfab.store.models import get_model, set_alias

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}
_IMAGE_B64 = {"type": "object", "additionalProperties": False,
              "properties": {"image_b64": {"type": "string"}, "text": {"type": "string"}}}
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["inputs"], "additionalProperties": False,
                "properties": {"inputs": {"type": "array", "minItems": 1, "items": _IMAGE_B64}},
            }},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }},
        },
    }
}


def state_of(request: Request) -> ServeState:
    st: ServeState = request.app.state.serve
    return st


def card(served: Served) -> ModelCard:
    p = served.plan
    info = p.info
    classes = [str(c) for c in info["classes"]]
    pos = info.get("positive")
    src = p.source
    return ModelCard(
        name=p.ref, id=p.model.id, model_name=p.model.name, version=p.model.version, tier=p.model.tier,
        task=p.model.task, modality=p.modality, classes=classes, positive=classes[pos] if pos is not None else None,
        threshold=info.get("threshold"), runtime=p.runtime, method=str(info.get("method")), parent_id=p.model.parent_id,
        dataset_version_id=src.dataset_version_id, deployment_id=served.deployment_id,
        shared_base=served.loaded.shared_base, own_bytes=served.loaded.own_bytes, metrics=dict(p.model.metrics or {}),
    )


def decide(probs: np.ndarray, classes: list[str], positive: int | None, threshold: float | None) -> int:
    """The class index: the stored threshold on the positive class (binary), else the argmax."""
    if positive is not None and threshold is not None and len(classes) == 2:
        return positive if float(probs[positive]) >= threshold else 1 - positive
    return int(np.argmax(probs))


async def _prep(st: ServeState, fn: Any, *args: Any) -> Any:
    """Run decoding / preprocessing in the single-threaded-torch pool (off the event loop)."""
    return await asyncio.get_running_loop().run_in_executor(st.prep_executor, fn, *args)


async def read_inputs(request: Request, st: ServeState, modality: str,
                      prepare: Callable[[Any], Any]) -> tuple[list[RawInput], list[Any]]:
    """Decode the request's inputs and ``prepare`` each, in one hop to the preprocessing pool."""
    s = st.settings

    def decode(parse: Callable[..., list[RawInput]], payload: Any) -> tuple[list[RawInput], list[Any]]:
        raws = parse(payload, modality, s.max_inputs, s.max_pixels)
        return raws, [prepare(r.item) for r in raws]

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = await request.body()
        return await _prep(st, decode, from_json, body)
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=s.max_inputs + 1, max_fields=s.max_inputs + 16,
                                      max_part_size=s.max_body_bytes)
        except HTTPException as exc:
            if "Too many files" in str(exc.detail):
                raise ApiError(413, "payload_too_large", f"more than {s.max_inputs} files per request") from None
            raise ApiError(400, "invalid_request", f"malformed multipart body: {exc.detail}") from None
        files = [(str(v.filename or k), await v.read()) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        await form.close()
        if not files:
            raise ApiError(422, "invalid_input", "no image files in the multipart body (field name: files)")
        return await _prep(st, decode, from_files, files)
    raise ApiError(415, "unsupported_media_type",
                   f"content type {ctype or '(none)'}: use application/json or multipart/form-data")


@router.post("/v1/models/{name}:predict", response_model=PredictResponse, responses=ERRORS,
             openapi_extra=PREDICT_BODY, summary="Predict a batch of inputs")
async def predict(name: str, request: Request) -> PredictResponse:
    st = state_of(request)
    principal = st.authorize(request.headers, "predict")
    if not st.ready:
        raise ApiError(503, "not_ready", f"models are {st.status}; see /readyz")
    served = st.lookup(name)
    if not principal.in_scope(served.names):
        raise ApiError(403, "forbidden", f"this key may not use model {name!r}")
    started = time.perf_counter()
    plan = served.plan
    raws, prepared = await read_inputs(request, st, plan.modality, served.loaded.prepare)
    rows = await served.runner.submit_many(prepared)
    latency = (time.perf_counter() - started) * 1000
    classes = [str(c) for c in plan.info["classes"]]
    pos, thr = plan.info.get("positive"), plan.info.get("threshold")
    out, records = [], []
    for raw, probs in zip(raws, rows, strict=True):
        idx = decide(np.asarray(probs), classes, pos, thr)
        scores = {c: round(float(p), 6) for c, p in zip(classes, probs, strict=True)}
        conf = scores[classes[idx]]
        low = conf < st.settings.low_confidence
        pid = uuid.uuid4().hex
        out.append(PredictionOut(id=pid, model_id=plan.model.id, model_version=plan.model.version, label=classes[idx],
                                 scores=scores, confidence=conf, low_confidence=low, input_hash=raw.digest,
                                 latency_ms=round(latency, 3)))
        row = {"id": pid, "deployment_id": served.deployment_id, "model_id": plan.model.id,
               "input_hash": raw.digest, "modality": raw.modality, "label": classes[idx], "scores": scores,
               "confidence": conf}
        records.append(PredictionRecord(row, raw.data if st.settings.record_inputs else None, low))
        st.metrics.predictions.labels(plan.ref, classes[idx]).inc()
        if low:
            st.metrics.low_confidence.labels(plan.ref).inc()
    st.recorder.add(records)
    served.counters["predictions"] += len(out)
    served.counters["low_confidence"] += sum(p.low_confidence for p in out)
    served.counters["requests"] += 1
    model = ModelRef(id=plan.model.id, name=plan.model.name, version=plan.model.version, runtime=plan.runtime)
    return PredictResponse(model=model, predictions=out, latency_ms=round(latency, 3))


@router.get("/v1/models", response_model=ModelList, responses=ERRORS,
            summary="Model cards of the served models (scenario, chat and embedding)")
async def list_models(request: Request) -> ModelList:
    from modelfab.serve.chat_host import chat_card

    st = state_of(request)
    principal = st.authorize(request.headers, "read")
    cards = [card(s) for s in st.served.values() if principal.in_scope(s.names)]
    cards += [chat_card(e) for e in st.chat.entries.values() if principal.in_scope(e.names)]
    return ModelList(models=cards)


@router.get("/v1/models/{name}", response_model=ModelCard, responses=ERRORS, summary="One served model's card")
async def get_card(name: str, request: Request) -> ModelCard:
    from modelfab.serve.chat_host import chat_card

    st = state_of(request)
    principal = st.authorize(request.headers, "read")
    entry = st.chat.index.get(name)
    names = entry.names if entry is not None else st.lookup(name).names
    if not principal.in_scope(names):
        raise ApiError(403, "forbidden", f"this key may not use model {name!r}")
    return chat_card(entry) if entry is not None else card(st.lookup(name))


@router.post("/v1/feedback", response_model=FeedbackResponse, responses=ERRORS, summary="Correct a prediction")
async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    st = state_of(request)
    principal = st.authorize(request.headers, "feedback")
    await run_in_threadpool(st.recorder.flush)
    res = await run_in_threadpool(record_feedback, st.store, body, principal)
    st.metrics.feedback.labels(res.model_id, "wrong" if body.wrong else "label").inc()
    for served in st.served.values():
        if served.plan.model.id == res.model_id:
            served.counters["feedback"] += 1
    return FeedbackResponse(id=res.id, prediction_id=body.prediction_id, kind=res.kind, label=res.label,
                            reviewed_low_confidence=res.reviewed_low_confidence)


@router.post("/v1/models/{name}:promote", response_model=PromoteResponse, responses=ERRORS,
             summary="Point NAME@ALIAS at a registered model (engineer or above)")
async def promote(name: str, body: PromoteRequest, request: Request) -> PromoteResponse:
    st = state_of(request)
    principal = st.authorize(request.headers, "promote")
    model = await run_in_threadpool(get_model, st.store, name)
    from modelfab.serve.feedback import model_names

    if not principal.in_scope(await run_in_threadpool(model_names, st.store, model.id) | {name}):
        raise ApiError(403, "forbidden", f"this key may not promote model {name!r}")
    model = await run_in_threadpool(set_alias, st.store, model.id, body.alias)
    return PromoteResponse(alias=f"{model.name}@{body.alias}", model_id=model.id, name=model.name,
                           version=model.version)


@router.get("/healthz", response_model=Health, summary="Liveness (no key needed)")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}},
            summary="Readiness: every model loaded and warmed up (no key needed)")
async def readyz(request: Request) -> Any:
    st = state_of(request)
    body = Health(status="ok" if st.ready else ("failed" if st.status == "failed" else "loading"), detail=st.detail)
    return JSONResponse(body.model_dump(), status_code=200 if st.ready else 503)


@router.get("/metrics", responses=ERRORS, summary="Prometheus metrics (viewer key or above)",
            response_class=Response)
async def metrics(request: Request) -> Response:
    st = state_of(request)
    st.authorize(request.headers, "metrics")
    for ref, served in st.served.items():
        st.metrics.queue_depth.labels(ref).set(served.runner.depth)
    return Response(st.metrics.render(), media_type=st.metrics.content_type)
