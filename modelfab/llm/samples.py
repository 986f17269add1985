"""LLM training items: parsing chat, preference and general items, and tokenizing chats with a mask
on the assistant turns (what SFT, DPO and the held-out evaluation feed the model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelfab.core.errors import DataError
from modelfab.llm.models import DEFAULT_CHAT_TEMPLATE, check_messages, render_chat

if TYPE_CHECKING:
    from modelfab.store.datasets import ItemRow

Chat = list[dict[str, str]]
Sample = str | Chat  # a plain text or a chat


def _json(row: ItemRow) -> Any:
    try:
        return json.loads(row.text or "")
    except json.JSONDecodeError as exc:
        raise DataError(f"item {row.key}: text is not JSON ({exc.msg})") from None


def parse_chat(row: ItemRow) -> Chat:
    """A chat item's messages ({"messages": [...]})."""
    obj = _json(row)
    if not isinstance(obj, dict) or "messages" not in obj:
        raise DataError(f"item {row.key}: expected {{\"messages\": [...]}}")
    try:
        return check_messages(obj["messages"])
    except DataError as exc:
        raise DataError(f"item {row.key}: {exc}") from None


@dataclass
class Pair:
    """One preference pair: two answers to the same prompt, the chosen one better."""

    key: str
    prompt: Chat
    chosen: str
    rejected: str
    synthetic: bool = False


def parse_pair(row: ItemRow) -> Pair:
    """A preference item ({"prompt": [...], "chosen": str, "rejected": str}; meta ``synthetic``)."""
    obj = _json(row)
    if not isinstance(obj, dict) or not isinstance(obj.get("chosen"), str) or not isinstance(obj.get("rejected"), str):
        raise DataError(f"item {row.key}: expected {{\"prompt\": [...], \"chosen\": str, \"rejected\": str}}")
    try:
        prompt = check_messages(obj.get("prompt"))  # type: ignore[arg-type]  # validated here
    except DataError as exc:
        raise DataError(f"item {row.key}: prompt: {exc}") from None
    return Pair(row.key, prompt, obj["chosen"], obj["rejected"], bool((row.meta or {}).get("synthetic", False)))


def general_samples(rows: Sequence[ItemRow], modality: str) -> list[Sample]:
    """Samples of a general dataset: chats for ``chat``, plain texts for ``text``."""
    if modality == "chat":
        return [parse_chat(r) for r in rows]
    return [r.text or "" for r in rows if (r.text or "").strip()]


# ---------------------------------------------------------------- tokenization


def ensure_chat_template(tokenizer: Any) -> None:
    """Give a tokenizer without a chat template the ChatML one :func:`render_chat` falls back to."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def _assistant_spans(tokenizer: Any, messages: Chat) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of its assistant turns (content + end of turn)."""
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise DataError("the chat template does not render earlier turns as a prefix of later ones; "
                            "assistant-only loss cannot locate the answers")
        spans.append((len(before), len(upto)))
    return full, spans


def encode_chat(tokenizer: Any, messages: Chat, last_only: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of a rendered chat and a 0/1 mask that is 1 on assistant turns (T,), (T,).

    ``last_only``: mark only the final assistant turn (the response scored in preference pairs).
    """
    full, spans = _assistant_spans(tokenizer, messages)
    spans = spans[-1:] if last_only else spans
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        starts = [s for s, _ in enc["offset_mapping"]]
        return list(enc["input_ids"]), [int(any(a <= s < b for a, b in spans)) for s in starts]
    ids: list[int] = []
    mask: list[int] = []
    cursor = 0
    for a, b in spans:  # slow tokenizers: tokenize the pieces between span edges
        for text, bit in ((full[cursor:a], 0), (full[a:b], 1)):
            piece = list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
            ids += piece
            mask += [bit] * len(piece)
        cursor = b
    tail = list(tokenizer(full[cursor:], add_special_tokens=False)["input_ids"]) if full[cursor:] else []
    return ids + tail, mask + [0] * len(tail)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a plain text followed by the end-of-sequence token."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids + ([int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else [])


def fit_length(key: str, ids: list[int], max_length: int, truncate: bool, what: str = "sample") -> list[int]:
    """``ids`` if it fits ``max_length``; cut when ``truncate``; else a DataError naming the item."""
    if len(ids) <= max_length:
        return ids
    if truncate:
        return ids[:max_length]
    raise DataError(f"item {key}: {what} is {len(ids)} tokens, over --max-length {max_length} "
                    f"(raise --max-length or pass --truncate)")
