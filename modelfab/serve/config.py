"""Typed settings of a serving process (validated at the edge; the CLI flags mirror them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """How to serve: where, which runtime, batching, limits, auth."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Interface to bind (loopback by default; put a TLS proxy in front for anything else)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port."""
    runtime: Literal["auto", "onnxruntime", "torch"] = "auto"
    """auto: ONNX Runtime when an exported child with passing parity exists, torch otherwise."""
    workers: int = Field(default=1, ge=1, le=64)
    """uvicorn worker processes (each loads the models; metrics are per worker)."""
    threads: int | None = Field(default=None, ge=1)
    """Intra-op threads of the inference runtime; default torch's setting."""
    ort_spinning: bool = False
    """Let ONNX Runtime's intra-op threads spin-wait between runs (lower latency when inference has the cores
    to itself; off by default: spinning threads take CPU from the event loop and the preprocessing threads)."""
    batching: bool = True
    """Dynamic micro-batching; off: every request runs on its own."""
    max_batch: int = Field(default=32, ge=1, le=1024)
    """Largest batch the batcher forms (inputs, not requests)."""
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    """Longest an input waits for companions once the batcher has picked it up."""
    concurrent_batches: int = Field(default=1, ge=1, le=64)
    """Batches that may run at once (inference threads; per model and in all); with ``threads=1`` two
    concurrent batches keep two cores busy without intra-op synchronisation."""
    gc_freeze: bool = True
    """Once the models are loaded, move every object so far to Python's permanent GC generation
    (``gc.freeze``): full collections then scan only what requests allocate, not the loaded libraries
    (measured: one 0.2 s stop of every thread per ~12 s of load without it)."""
    low_confidence: float = Field(default=0.6, ge=0, le=1)
    """Predictions whose top probability is below this are kept for review (0 disables)."""
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Request bodies larger than this get 413."""
    max_inputs: int = Field(default=64, ge=1)
    """Inputs (images or texts) per predict request; more get 413."""
    max_pixels: int = Field(default=40_000_000, ge=1)
    """Decoded image size limit (width x height); larger images get 413."""
    auth: bool = True
    """Require API keys (only the explicit --no-auth flag turns this off)."""
    key_cache_s: float = Field(default=5.0, ge=0)
    """Seconds a verified key is trusted before the store is asked again (revocation delay)."""
    record_inputs: bool = True
    """Store every uploaded input in the artifact store by content hash (needed by ingest-feedback)."""
    warmup: bool = True
    """Run one batch per model before reporting ready."""
    chat_max_tokens: int = Field(default=512, ge=1, le=32_768)
    """Largest ``max_tokens`` a chat request may ask for (422 above)."""
    chat_default_max_tokens: int = Field(default=128, ge=1, le=32_768)
    """``max_tokens`` of a chat request that gives none (capped by chat_max_tokens and the context left)."""
    chat_workers: int = Field(default=4, ge=1, le=64)
    """Threads running chat generations and embeddings (one base model still generates one request at a time)."""
    chat_max_pending: int = Field(default=64, ge=1)
    """Chat/embedding requests running or queued at once; more get 429."""
