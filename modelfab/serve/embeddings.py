"""``POST /v1/embeddings`` (OpenAI-compatible) over served text encoders and chat models.

A text encoder (a registered backbone of modality ``text``) embeds with its own pooling (e.g.
normalised mean pooling); a chat model embeds with the attention-masked mean of its last hidden
states, with its LoRA adapter active. Texts over the model's token limit are refused (413), not
truncated silently.
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, Request

from modelfab.core.errors import ModelfabError
from modelfab.llm.models import ContextLengthError
from modelfab.serve.chat import ERRORS, resolve, state_of
from modelfab.serve.chat_host import EMBEDDINGS_PATH
from modelfab.serve.inputs import ApiError
from modelfab.serve.schemas import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage

router = APIRouter()


def encode_vector(vector: np.ndarray, encoding: str | None) -> list[float] | str:
    """One (D,) embedding as a list of floats, or base64 of its little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


@router.post(EMBEDDINGS_PATH, response_model=EmbeddingResponse, responses=ERRORS,
             summary="Embeddings of texts (OpenAI-compatible) from a served text encoder or chat model")
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    st = state_of(request)
    label = "-"
    try:
        principal = st.authorize(request.headers, "predict")
        entry = await resolve(st, body.model, "embedding", principal)
        label = entry.ref
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        limit = st.settings.max_inputs
        if len(texts) > limit:
            raise ApiError(413, "payload_too_large", f"{len(texts)} inputs; at most {limit} per request")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ApiError(422, "invalid_input", f"input[{empty[0]}]: empty text")
        dim = int(entry.backbone.embed_dim)
        if body.dimensions is not None and body.dimensions != dim:
            raise ApiError(422, "invalid_request", f"dimensions: {entry.ref} embeds in {dim} dimensions, "
                                                   f"not {body.dimensions}")
        st.chat.admit()
        try:
            vectors, tokens = await asyncio.get_running_loop().run_in_executor(
                st.chat.executor, st.chat.embed, entry, texts)  # (N, D)
        except ContextLengthError as exc:
            raise ApiError(413, "context_length_exceeded", str(exc)) from None
        finally:
            st.chat.release()
    except ModelfabError as exc:
        st.metrics.embedding_requests.labels(label, str(exc.http_status)).inc()
        raise
    st.metrics.embedding_requests.labels(label, "200").inc()
    st.metrics.embedding_inputs.labels(label).inc(len(texts))
    entry.counters["embedding_requests"] += 1
    entry.counters["embedded_texts"] += len(texts)
    data = [EmbeddingData(index=i, embedding=encode_vector(v, body.encoding_format)) for i, v in enumerate(vectors)]
    return EmbeddingResponse(data=data, model=entry.ref,
                             usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
