"""Answer a question with a chat model from retrieved passages, citing them.

The chat is a system prompt (:data:`SYSTEM_PROMPT`) and one user message::

    Context passages:
    [1] <chunk text>
    [2] <chunk text>

    Question: <question>

Passages are given best first.  When prompt + ``max_new_tokens`` exceed the model's context window,
the lowest-ranked passages are dropped one by one; if the best passage alone still does not fit it is
cut (keeping its beginning) to the room left.  Without retrieval the model gets
:data:`NO_CONTEXT_PROMPT` and the bare question.  Generation is greedy, so answers are reproducible.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from modelfab.core.errors import ConfigError, DataError
from modelfab.llm.models import ChatModel, ContextLengthError
from modelfab.llm.rag.index import Hit, index_info, load_index

if TYPE_CHECKING:
    from modelfab.store.store import Store

SYSTEM_PROMPT = ("Answer the question briefly, using only the numbered context passages. Cite the passages you "
                 "used by their numbers, like [1]. If the passages do not contain the answer, say that you do not "
                 "know.")
NO_CONTEXT_PROMPT = "Answer the question briefly."
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class Answer:
    """A generated answer, the passages it was given (``citations[n-1]`` is passage ``[n]``) and which
    of them it cited."""

    text: str
    citations: list[Hit]
    cited: list[int]
    prompt_tokens: int
    completion_tokens: int
    retrieval: bool
    dropped: int = 0  # retrieved passages left out to fit the context window
    truncated: bool = False  # the last passage given was cut to fit
    seconds: float = 0.0
    first_token_s: float = 0.0
    retrieved: list[Hit] = field(default_factory=list)  # everything retrieved, before fitting

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "citations": [{"n": n, **h.to_dict(), "cited": n in self.cited} for n, h in enumerate(self.citations, 1)],
            "cited": self.cited, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "retrieval": self.retrieval, "dropped": self.dropped, "truncated": self.truncated,
            "seconds": round(self.seconds, 3), "first_token_s": round(self.first_token_s, 3),
        }


def build_messages(question: str, passages: Sequence[Hit] | None) -> list[dict[str, str]]:
    """The chat for ``question``: numbered ``passages`` as context, or none (``None``: no retrieval)."""
    if passages is None:
        return [{"role": "system", "content": NO_CONTEXT_PROMPT}, {"role": "user", "content": question}]
    context = "\n".join(f"[{n}] {' '.join(p.text.split())}" for n, p in enumerate(passages, 1))
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Context passages:\n{context}\n\nQuestion: {question}"}]


def _fits(chat: ChatModel, messages: list[dict[str, str]], max_new_tokens: int) -> bool:
    try:
        chat.encode(messages, max_new_tokens)
    except ContextLengthError:
        return False
    return True


def fit_passages(chat: ChatModel, question: str, hits: Sequence[Hit],
                 max_new_tokens: int) -> tuple[list[dict[str, str]], list[Hit], bool]:
    """(messages, passages kept, whether the last was cut) so that prompt + ``max_new_tokens`` fit."""
    kept = list(hits)
    while kept:
        messages = build_messages(question, kept)
        if _fits(chat, messages, max_new_tokens):
            return messages, kept, False
        if len(kept) == 1:
            break
        kept.pop()
    if kept:  # the best passage alone is too long: keep the longest prefix that fits
        best = kept[0]
        lo, hi = 0, len(best.text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _fits(chat, build_messages(question, [replace(best, text=best.text[:mid])]), max_new_tokens):
                lo = mid
            else:
                hi = mid - 1
        if lo > 0:
            cut = replace(best, text=best.text[:lo], end=best.start + lo)
            return build_messages(question, [cut]), [cut], True
    messages = build_messages(question, [])
    chat.encode(messages, max_new_tokens)  # raises ContextLengthError: the question alone is too long
    return messages, [], False


def cited_numbers(text: str, given: int) -> list[int]:
    """Passage numbers cited in ``text`` as ``[n]`` or ``[n, m]`` (only 1..given), in order of first use."""
    out: list[int] = []
    for m in _CITE.finditer(text):
        for part in m.group(1).split(","):
            n = int(part)
            if 1 <= n <= given and n not in out:
                out.append(n)
    return out


def answer_question(chat: ChatModel, question: str, hits: Sequence[Hit] | None,
                    max_new_tokens: int = 96) -> Answer:
    """Answer ``question`` from ``hits`` (best first), or without context when ``hits`` is None."""
    if not question.strip():
        raise DataError("question: must not be empty")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    question = question.strip()
    kept: list[Hit] = []
    truncated = False
    if hits is None:
        messages = build_messages(question, None)
    else:
        messages, kept, truncated = fit_passages(chat, question, hits, max_new_tokens)
    start = time.perf_counter()
    gen = chat.generate(messages, max_new_tokens=max_new_tokens)
    text = gen.text.strip()
    return Answer(text, kept, cited_numbers(text, len(kept)), gen.prompt_tokens, gen.completion_tokens,
                  hits is not None, dropped=len(hits or []) - len(kept), truncated=truncated,
                  seconds=time.perf_counter() - start, first_token_s=gen.first_token_s, retrieved=list(hits or []))


def ask(store: Store, index_ref: str, model_ref: str, question: str, k: int = 4, max_new_tokens: int = 96,
        retrieval: bool = True) -> Answer:
    """Retrieve ``k`` chunks of index ``index_ref`` for ``question`` and answer it with chat model
    ``model_ref`` (``retrieval=False``: the same model answers with no context)."""
    from modelfab.llm.models import load_chat_model

    if k < 1:
        raise ConfigError(f"k: must be >= 1, got {k}")
    if not question.strip():
        raise DataError("question: must not be empty")
    if retrieval:
        hits: list[Hit] | None = load_index(store, index_ref).search(question, k)
    else:
        index_info(store, index_ref)  # the index must exist even when it is not used
        hits = None
    return answer_question(load_chat_model(store, model_ref), question, hits, max_new_tokens)
