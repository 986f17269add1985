"""Feedback on served predictions: corrections (the right label, or "wrong") and low-confidence reviews.

A correction is a ``feedback`` row of kind ``correction``. When the prediction was low-confidence,
its pending ``low-confidence`` row is marked reviewed (its ``correction`` is set) in the same
transaction. ``modelfab data ingest-feedback`` turns these rows into the next dataset version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from modelfab.core.errors import NotFoundError
from modelfab.serve.auth import Principal
from modelfab.serve.inputs import ApiError
from modelfab.serve.schemas import FeedbackRequest
from modelfab.store.models import model_card
from modelfab.store.schema import Feedback, Model, ModelAlias, Prediction
from modelfab.store.store import Store


@dataclass
class FeedbackResult:
    id: int
    kind: str
    label: str | None
    reviewed_low_confidence: bool
    model_id: str


def model_names(store: Store, model_id: str) -> set[str]:
    """Every name a key scope may use for a model: id, name, name:version, name@alias."""
    with store.session() as s:
        m = s.get(Model, model_id)
        if m is None:
            return {model_id}
        aliases = s.scalars(select(ModelAlias.alias).where(ModelAlias.model_id == model_id)).all()
    return {m.id, m.name, f"{m.name}:{m.version}", *(f"{m.name}@{a}" for a in aliases)}


def model_classes(store: Store, model_id: str) -> list[str]:
    card = model_card(store, model_id)
    section = card.get("scenario") or card.get("exported") or {}
    return [str(c) for c in section.get("classes", [])]


def find_prediction(store: Store, prediction_id: str, wait_s: float = 1.0) -> Prediction:
    """The recorded prediction; waits briefly (another worker may still be writing it)."""
    deadline = time.monotonic() + wait_s
    while True:
        with store.session() as s:
            pred = s.get(Prediction, prediction_id)
        if pred is not None:
            return pred
        if time.monotonic() >= deadline:
            raise NotFoundError(f"unknown prediction {prediction_id!r}")
        time.sleep(0.05)


def record_feedback(
    store: Store, req: FeedbackRequest, principal: Principal, extra_names: set[str] | None = None
) -> FeedbackResult:
    """Store a correction of prediction ``req.prediction_id`` (scope-checked against its model)."""
    pred = find_prediction(store, req.prediction_id)
    names = model_names(store, pred.model_id) | (extra_names or set())
    if not principal.in_scope(names):
        raise ApiError(403, "forbidden", f"this key may not send feedback for model {pred.model_id}")
    classes = model_classes(store, pred.model_id)
    label = req.label
    if label is not None and label not in classes:
        raise ApiError(422, "invalid_request", f"label: {label!r} is not a class of the model; classes: {classes}")
    if req.wrong and len(classes) == 2:
        label = classes[1 - classes.index(pred.label)] if pred.label in classes else None
    wrong = bool(req.wrong or label != pred.label)
    correction: dict[str, Any] = {"label": label, "wrong": wrong, "by": principal.key_id}
    if req.note:
        correction["note"] = req.note
    prediction = {"label": pred.label, "scores": pred.scores, "confidence": pred.confidence}
    with store.transaction() as s:
        row = Feedback(
            deployment_id=pred.deployment_id,
            prediction_id=pred.id,
            model_id=pred.model_id,
            input_hash=pred.input_hash,
            prediction=prediction,
            correction=correction,
            kind="correction",
        )
        s.add(row)
        lows = s.scalars(
            select(Feedback).where(Feedback.prediction_id == pred.id, Feedback.kind == "low-confidence")
        ).all()
        pending = [low for low in lows if low.correction is None]  # JSON null and SQL NULL both read as None
        for low in pending:
            low.correction = {**correction, "review": "feedback"}
        s.flush()
        fid = int(row.id)
    return FeedbackResult(fid, "correction", label, bool(pending), pred.model_id)
