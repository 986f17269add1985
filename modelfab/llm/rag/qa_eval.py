"""Evaluate knowledge QA: retrieval recall@k and answer quality on a hand-written QA file.

The QA file is JSONL, one object per line::

    {"id": "q01", "question": "...", "answer": "reference answer", "source": "guide/permits.md",
     "passage": "exact text of the source document that holds the answer", "facts": ["key", "facts"]}

``source`` is a document path relative to the indexed folder; ``passage`` must occur in that document's
text (for HTML, its visible text; whitespace runs compare as one space); every fact must be contained in
the reference answer (so the reference itself scores as correct).  Answers are scored by the rule in
:mod:`modelfab.llm.rag.scoring`, identical for the retrieval and no-retrieval arms.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.llm.models import ContextLengthError
from modelfab.llm.rag.answer import answer_question
from modelfab.llm.rag.index import index_documents, index_info, load_index
from modelfab.llm.rag.scoring import contains_fact, fact_score, is_correct, locate_passage, retrieval_rank, token_f1
from modelfab.store.runs import finish_run, tracked_run

if TYPE_CHECKING:
    from modelfab.store.store import Store

RULE = ("normalise (lowercase, delete punctuation, drop a/an/the, collapse spaces); f1 = token F1 vs reference; "
        "facts = fraction of key facts contained as whole words; correct = all facts contained; a passage is "
        "retrieved by a chunk of the same document covering >= 50% of its characters")
_FIELDS = {"id": str, "question": str, "answer": str, "source": str, "passage": str}


@dataclass(frozen=True)
class QAItem:
    """One validated QA item with its passage's character span in the source document."""

    id: str
    question: str
    answer: str
    source: str
    passage: str
    facts: tuple[str, ...]
    span: tuple[int, int]


def _parse(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object")
    for key, typ in _FIELDS.items():
        if not isinstance(obj.get(key), typ) or not str(obj[key]).strip():
            raise DataError(f"{where}: field {key!r} must be a non-empty string")
    facts = obj.get("facts")
    if not isinstance(facts, list) or not facts or not all(isinstance(f, str) and f.strip() for f in facts):
        raise DataError(f"{where}: field 'facts' must be a non-empty list of non-empty strings")
    return obj


def load_qa(path: str | Path, documents: dict[str, str], index_name: str = "the index") -> list[QAItem]:
    """Read and validate a QA file against the indexed ``documents`` (source -> text)."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"QA file {p} does not exist")
    items: list[QAItem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = _parse(line, f"{p.name} line {lineno}")
        qid = obj["id"]
        if qid in seen:
            raise DataError(f"QA item {qid!r}: duplicate id ({p.name} line {lineno})")
        seen.add(qid)
        text = documents.get(obj["source"])
        if text is None:
            raise DataError(f"QA item {qid!r}: source {obj['source']!r} is not a document of {index_name}")
        span = locate_passage(text, obj["passage"])
        if span is None:
            raise DataError(f"QA item {qid!r}: passage not found in its source document {obj['source']}")
        facts = tuple(str(f) for f in obj["facts"])
        for fact in facts:
            if not contains_fact(obj["answer"], fact):
                raise DataError(f"QA item {qid!r}: key fact {fact!r} is not contained in its reference answer")
        items.append(QAItem(qid, obj["question"].strip(), obj["answer"], obj["source"], obj["passage"], facts, span))
    if not items:
        raise DataError(f"QA file {p} holds no items")
    return items


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def evaluate_qa(
    store: Store,
    index_ref: str,
    model_ref: str,
    qa_path: str | Path,
    k: int = 4,
    retrieval: bool = True,
    limit: int | None = None,
    max_new_tokens: int = 96,
) -> dict[str, Any]:
    """Answer every QA item with ``model_ref`` (from index ``index_ref`` unless ``retrieval`` is False)
    and score it.  Returns the report: ``recall@1``, ``recall@k`` (None without retrieval), ``f1``,
    ``fact_score``, ``accuracy`` (means over items) and per-item ``rows``."""
    from modelfab.core.progress import track
    from modelfab.llm.models import load_chat_model

    if k < 1:
        raise ConfigError(f"k: must be >= 1, got {k}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit: must be >= 1, got {limit}")
    model, info = index_info(store, index_ref)
    items = load_qa(qa_path, index_documents(store, info), f"index {model.name}:{model.version}")[:limit]
    chat = load_chat_model(store, model_ref)
    index = load_index(store, model.id) if retrieval else None
    config = {"index": model.id, "model": chat.model.id, "qa": str(Path(qa_path).resolve()), "k": k,
              "retrieval": retrieval, "limit": limit, "max_new_tokens": max_new_tokens}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tracked_run(store, "llm-qa-eval", config=config, inputs={"index": model.id, "model": chat.model.id}) as run:
        for item in track(items, len(items), "qa-eval"):
            hits = index.search(item.question, k) if index is not None else None
            rank = retrieval_rank(item.source, item.span, hits) if hits is not None else None
            try:
                ans = answer_question(chat, item.question, hits, max_new_tokens)
            except ContextLengthError as exc:  # scored as a wrong answer, counted apart
                rows.append({"id": item.id, "question": item.question, "answer": "", "reference": item.answer,
                             "f1": 0.0, "facts": 0.0, "correct": False, "rank": rank, "error": str(exc),
                             "retrieved": [h.key for h in hits] if hits is not None else [], "cited": [],
                             "given": 0, "prompt_tokens": None, "completion_tokens": 0, "seconds": 0.0})
                continue
            rows.append({
                "id": item.id, "question": item.question, "answer": ans.text, "reference": item.answer,
                "f1": round(token_f1(ans.text, item.answer), 4), "facts": round(fact_score(ans.text, item.facts), 4),
                "correct": is_correct(ans.text, item.facts), "rank": rank,
                "retrieved": [h.key for h in hits] if hits is not None else [], "cited": ans.cited,
                "given": len(ans.citations), "prompt_tokens": ans.prompt_tokens,
                "completion_tokens": ans.completion_tokens, "seconds": round(ans.seconds, 3),
            })
        ranks = [r["rank"] for r in rows]
        summary: dict[str, Any] = {
            "items": len(rows),
            "recall@1": _mean([float(r == 1) for r in ranks]) if retrieval else None,
            "recall@k": _mean([float(r is not None and r <= k) for r in ranks]) if retrieval else None,
            "f1": _mean([r["f1"] for r in rows]), "fact_score": _mean([r["facts"] for r in rows]),
            "accuracy": _mean([float(r["correct"]) for r in rows]),
            "over_context": sum(1 for r in rows if "error" in r),
            "seconds": round(time.perf_counter() - started, 2),
        }
        finish_run(store, run.id, outputs={"items": len(rows)},
                   metrics={key: v for key, v in summary.items() if v is not None})
    return {"index": f"{model.name}:{model.version}", "index_id": model.id,
            "model": f"{chat.model.name}:{chat.model.version}", "model_id": chat.model.id,
            "qa": str(qa_path), "k": k, "retrieval": retrieval, "rule": RULE, "run": run.id, **summary, "rows": rows}
