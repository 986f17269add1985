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
    kind: Literal["scenario", "chat", "embedding"] = "scenario"
    """scenario: ``POST /v1/models/{name}:predict``; chat: ``/v1/chat/completions`` (and ``/v1/embeddings``);
    embedding: a text encoder for ``/v1/embeddings``."""
    context_length: int | None = None
    """Chat and embedding models: tokens the model attends to (prompt + completion for chat)."""


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


# --- OpenAI-compatible chat completions and embeddings (unknown OpenAI fields are ignored) ---


class TextPart(BaseModel):
    """One part of a message's content (only text parts are accepted)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    """A chat message: ``content`` is a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False
    """Send one more chunk, before ``[DONE]``, with the token counts (``choices`` empty)."""


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions`` (a subset of OpenAI's; fields not listed are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=300)
    """A served chat model: the name it was served under, its id, NAME or NAME:version (NAME@alias too)."""
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens to generate (default: the server's chat_default_max_tokens; above chat_max_tokens: 422)."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """OpenAI's newer name for ``max_tokens`` (wins when both are given)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """0 (below 0.01): greedy, deterministic; default 1 as in OpenAI's API."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool | None = False
    """Server-sent events: ``data: <chat.completion.chunk>`` lines, then ``data: [DONE]``."""
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    """Seeds sampling (temperature > 0) for repeatable outputs."""
    n: int | None = Field(default=None, ge=1, le=1)
    """Only one choice per request."""
    stop: str | list[str] | None = None
    """Not supported: a non-empty value is refused (422)."""

    @model_validator(mode="after")
    def _no_stop(self) -> ChatRequest:
        if self.stop:
            raise ValueError("stop sequences are not supported by this server")
        return self

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    """length: ``max_tokens`` were generated; stop: the model ended its answer."""


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatInfo(BaseModel):
    """modelfab's additions to a completion: which registered model answered, and how fast."""

    model_id: str
    model_version: int
    time_to_first_token_ms: float
    """From the request's arrival (after validation) to the first generated text, queueing included."""
    latency_ms: float
    tokens_per_s: float
    """Completion tokens per second of generation (queueing excluded)."""


class ChatCompletion(BaseModel):
    """A non-streamed completion (OpenAI's ``chat.completion`` object)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    modelfab: ChatInfo


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion (``data: <this as JSON>``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` (OpenAI's shape; token-id inputs are not accepted)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=300)
    """A served text encoder or chat model."""
    input: str | list[str] = Field(min_length=1)
    """One text or a list of texts (at most the server's max_inputs; none empty)."""
    encoding_format: Literal["float", "base64"] | None = None
    """float (default): lists of numbers; base64: little-endian float32 bytes, base64-encoded."""
    dimensions: int | None = Field(default=None, ge=1)
    """Must equal the model's dimension when given (no truncation)."""


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
