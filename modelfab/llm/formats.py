"""Item formats of the language-model datasets: SFT chats, ranking prompts, preference pairs.

Every item's ``text`` is canonical JSON (sorted keys, UTF-8), so equal content gives an equal
``content_hash`` (sha256 of the text) and the same version hash on any machine.

* ``chat`` (SFT): ``{"messages": [{"role", "content"}, ...]}``; meta ``tokens`` (with the chat
  template) and ``template``; task ``{"sft": {"type": "sft"}}``.
* ``ranking``: ``{"prompt": [messages], "candidates": [{"id", "text"}], "reference": str | null}``;
  meta ``generator``. Rankings are labels ``rank:<annotator>`` (candidate ids best -> worst); the
  label schema holds ``rankers``, ``assignments`` and ``overlap``.
* ``preference`` (DPO): ``{"prompt": [messages], "chosen": str, "rejected": str}``; meta
  ``synthetic``, ``rankers``, ``source``, ``prompt_key``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelfab.core.errors import DataError
from modelfab.data.splits import split_hash, stratified_split
from modelfab.llm.models import Message, check_messages
from modelfab.store.datasets import ItemSpec

SFT_MODALITY = "chat"
RANKING_MODALITY = "ranking"
PREFERENCE_MODALITY = "preference"
SFT_TASKS: dict[str, Any] = {"sft": {"type": "sft"}}
RANK_PREFIX = "rank:"
# The language-model datasets have no use for a calibration split (that is for classifiers).
LLM_SPLIT_RATIOS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def canonical_json(obj: Any) -> str:
    """The one text form of an item: sorted keys, no ASCII escaping."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


def text_hash(text: str) -> str:
    """``content_hash`` of a text item: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load(item_text: str | None, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(item_text or "")
    except json.JSONDecodeError:
        raise DataError(f"not a {what} item: its text is not JSON") from None
    if not isinstance(obj, dict):
        raise DataError(f"not a {what} item: expected a JSON object")
    return obj


def keyed_splits(keys: Iterable[str], seed: int = 0) -> tuple[dict[str, str], dict[str, Any]]:
    """A deterministic train/val/test split of ``keys`` (keyed hash; see :mod:`modelfab.data.splits`)."""
    splits = stratified_split(dict.fromkeys(keys), LLM_SPLIT_RATIOS, seed)
    info = {"seed": seed, "ratios": LLM_SPLIT_RATIOS, "stratify": [], "hash": split_hash(splits)}
    return splits, info


# --- SFT chats -------------------------------------------------------------------------------------------------


def chat_text(messages: Sequence[Message]) -> str:
    """Canonical text of a chat item."""
    return canonical_json({"messages": check_messages(messages)})


def chat_messages(item_text: str | None) -> list[dict[str, str]]:
    """The messages of a ``chat`` item (validated)."""
    obj = _load(item_text, "chat")
    return check_messages(obj.get("messages") or [])


def sft_item(key: str, messages: Sequence[Message], tokens: int, template: str,
             extra: Mapping[str, Any] | None = None) -> ItemSpec:
    """One SFT sample. ``extra`` (e.g. source row and variables) goes into meta next to tokens/template."""
    text = chat_text(messages)
    return ItemSpec(key, text_hash(text), text=text, meta={**(extra or {}), "tokens": tokens, "template": template})


# --- rankings --------------------------------------------------------------------------------------------------


@dataclass
class RankingPrompt:
    """A parsed ranking item: the prompt, its candidates (id -> text, in stored order), a reference."""

    prompt: list[dict[str, str]]
    candidates: dict[str, str]
    reference: str | None = None

    @property
    def ids(self) -> list[str]:
        return list(self.candidates)


def ranking_text(prompt: Sequence[Message], candidates: Sequence[tuple[str, str]], reference: str | None) -> str:
    """Canonical text of a ranking item; ``candidates`` is a list of (id, text) with unique ids."""
    ids = [c for c, _ in candidates]
    if len(set(ids)) != len(ids):
        raise DataError(f"candidate ids must be unique, got {ids}")
    return canonical_json({"prompt": check_messages(prompt), "reference": reference,
                           "candidates": [{"id": c, "text": t} for c, t in candidates]})


def ranking_item(key: str, prompt: Sequence[Message], candidates: Sequence[tuple[str, str]], reference: str | None,
                 generator: str, extra: Mapping[str, Any] | None = None) -> ItemSpec:
    """One ranking prompt with its candidates."""
    text = ranking_text(prompt, candidates, reference)
    return ItemSpec(key, text_hash(text), text=text, meta={**(extra or {}), "generator": generator})


def parse_ranking(item_text: str | None) -> RankingPrompt:
    """The prompt, candidates and reference of a ``ranking`` item."""
    obj = _load(item_text, "ranking")
    cands = obj.get("candidates")
    if not isinstance(cands, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str)
                                              and isinstance(c.get("text"), str) for c in cands):
        raise DataError("not a ranking item: candidates must be a list of {id, text}")
    ref = obj.get("reference")
    return RankingPrompt(check_messages(obj.get("prompt") or []), {c["id"]: c["text"] for c in cands},
                         ref if isinstance(ref, str) else None)


def rank_field(ranker: str) -> str:
    """Label field holding ``ranker``'s ranking."""
    return f"{RANK_PREFIX}{ranker}"


# --- preference pairs ------------------------------------------------------------------------------------------


def preference_text(prompt: Sequence[Message], chosen: str, rejected: str) -> str:
    """Canonical text of a preference pair."""
    return canonical_json({"prompt": check_messages(prompt), "chosen": chosen, "rejected": rejected})


def preference_item(key: str, prompt: Sequence[Message], chosen: str, rejected: str, *, synthetic: bool,
                    rankers: Sequence[str], source: str, prompt_key: str,
                    extra: Mapping[str, Any] | None = None) -> ItemSpec:
    """One (prompt, chosen, rejected) pair for DPO."""
    text = preference_text(prompt, chosen, rejected)
    meta = {**(extra or {}), "synthetic": synthetic, "rankers": list(rankers), "source": source,
            "prompt_key": prompt_key}
    return ItemSpec(key, text_hash(text), text=text, meta=meta)


def preference_pair(item_text: str | None) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen, rejected) of a ``preference`` item."""
    obj = _load(item_text, "preference")
    chosen, rejected = obj.get("chosen"), obj.get("rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise DataError("not a preference item: chosen and rejected must be strings")
    return check_messages(obj.get("prompt") or []), chosen, rejected


__all__ = ["LLM_SPLIT_RATIOS", "PREFERENCE_MODALITY", "RANKING_MODALITY", "RANK_PREFIX", "SFT_MODALITY",
           "SFT_TASKS", "RankingPrompt", "canonical_json", "chat_messages", "chat_text", "keyed_splits",
           "parse_ranking", "preference_item", "preference_pair", "preference_text", "rank_field", "ranking_item",
           "ranking_text", "sft_item", "text_hash"]
