"""Request and response bodies of the REST API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ErrorDetail(BaseModel):
    code: str
    """Machine-readable error code, e.g. payload_too_large, unauthorized, not_found."""
    message: str
    """One human-readable line."""


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


class PredictInput(BaseModel):
    """One input: a base64-encoded image file or a text."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str | None = None
    """The image file's bytes (PNG, JPEG, ...), base64-encoded."""
    text: str | None = None
    """A text, for text models."""

    @model_validator(mode="after")
    def _one(self) -> PredictInput:
        if (self.image_b64 is None) == (self.text is None):
            raise ValueError("give exactly one of image_b64 or text")
        return self


class PredictRequest(BaseModel):
    """A JSON predict request: a batch of inputs."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[PredictInput] = Field(min_length=1)
    """The inputs, predicted as one batch."""


class ModelRef(BaseModel):
    id: str
    name: str
    version: int
    runtime: str


class PredictionOut(BaseModel):
    """One prediction: keep ``id`` to send feedback about it."""

    id: str
    model_id: str
    model_version: int
    label: str
    scores: dict[str, float]
    confidence: float
    low_confidence: bool
    input_hash: str
    latency_ms: float


class PredictResponse(BaseModel):
    model: ModelRef
    predictions: list[PredictionOut]
    latency_ms: float


class ModelCard(BaseModel):
    """A served model as clients see it."""

    name: str
    """The name this server serves it under (what goes into the predict path)."""
    id: str
    model_name: str
    version: int
    tier: str
    task: str
    modality: str
    classes: list[str]
    positive: str | None
    threshold: float | None
    runtime: str
    method: str | None
    parent_id: str | None
    dataset_version_id: int | None
    deployment_id: str | None
    shared_base: str | None
    """Base model id whose single copy this model shares with other LoRA/probe L2s."""
    own_bytes: int
    """Weight bytes this model adds to the process (shared L2s: adapters + head only)."""
    metrics: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelCard]


class FeedbackRequest(BaseModel):
    """A correction of one prediction: the right label, or just that it was wrong."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(min_length=1, max_length=64)
    label: str | None = Field(default=None, max_length=200)
    """The correct class (one of the model's classes)."""
    wrong: bool = False
    """The prediction was wrong (the label is then the other class for binary models)."""
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one(self) -> FeedbackRequest:
        if (self.label is None) == (not self.wrong):
            raise ValueError("give exactly one of label or wrong=true")
        return self


class FeedbackResponse(BaseModel):
    id: int
    prediction_id: str
    kind: str
    label: str | None
    reviewed_low_confidence: bool


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    """The alias to point at the model, e.g. production."""


class PromoteResponse(BaseModel):
    alias: str
    model_id: str
    name: str
    version: int


class Health(BaseModel):
    status: Literal["ok", "loading", "failed"]
    detail: str = ""
