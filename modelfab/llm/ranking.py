"""Preference data: candidate generation, annotator assignments, ranking import, synthetic rankings.

Aggregating rankings into DPO pairs is :mod:`modelfab.llm.preference`.

A ranking dataset (modality ``ranking``, see :mod:`modelfab.llm.formats`) holds one item per prompt
with its candidates. Every change (assign, import, synthetic) makes a NEW version whose parent is
the one changed. Rankings are labels ``rank:<ranker>``; the version's label schema says who ranked::

    {"rankers": {"alice": {"kind": "human"},
                 "rule:reference-f1": {"kind": "synthetic", "rule": "reference-f1"}},
     "assignments": {"alice": ["row-0000001", ...]}, "overlap": 2}

Human annotator names are ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (no ``:``), so they never collide with
the ``rule:<name>`` rankers of synthetic rankings.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.core.progress import track
from modelfab.data.result import ImportResult
from modelfab.llm.agreement import annotator_agreement, item_agreement, mean_agreement
from modelfab.llm.formats import (
    RANK_PREFIX,
    RANKING_MODALITY,
    SFT_MODALITY,
    RankingPrompt,
    chat_messages,
    keyed_splits,
    parse_ranking,
    rank_field,
    ranking_item,
)
from modelfab.llm.rag.scoring import token_f1
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version, spec_from_version
from modelfab.store.runs import finish_run, tracked_run

if TYPE_CHECKING:
    from modelfab.store.schema import DatasetVersion
    from modelfab.store.store import Store

HUMAN = "human"
SYNTHETIC = "synthetic"
LLM_SPLITS = ("train", "val", "test")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_annotator(name: str) -> str:
    """A valid human annotator name (letters, digits, ``_.-``; no ``:``), else ConfigError."""
    if not _NAME.match(name):
        raise ConfigError(f"annotator name {name!r}: use letters, digits, '_', '.', '-' (max 64, no ':')")
    return name


def _rank_key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}\x00{text}".encode()).hexdigest()


# --- reading a ranking version ---------------------------------------------------------------------------------


@dataclass
class RankingVersion:
    """A ranking version: its spec (to derive the next version), parsed prompts and label schema."""

    version: DatasetVersion
    spec: VersionSpec
    prompts: dict[str, RankingPrompt]
    rankers: dict[str, dict[str, Any]]
    assignments: dict[str, list[str]]
    overlap: int

    @property
    def ref(self) -> str:
        return f"{self.version.dataset.name}@{self.version.version}"

    def kind(self, ranker: str) -> str:
        """``human`` or ``synthetic`` (rankers missing from the schema: by name, ``rule:`` = synthetic)."""
        info = self.rankers.get(ranker)
        if info is not None:
            return str(info.get("kind", HUMAN))
        return SYNTHETIC if ranker.startswith("rule:") else HUMAN

    def rankings(self) -> dict[str, dict[str, list[str]]]:
        """ranker -> item key -> ranking (candidate ids best -> worst)."""
        out: dict[str, dict[str, list[str]]] = {}
        for key, fields in self.spec.labels.items():
            for fld, value in fields.items():
                if fld.startswith(RANK_PREFIX) and isinstance(value, list):
                    out.setdefault(fld[len(RANK_PREFIX):], {})[key] = [str(v) for v in value]
        return out

    def schema(self, **changes: Any) -> dict[str, Any]:
        base = {**dict(self.spec.label_schema), "rankers": self.rankers, "assignments": self.assignments,
                "overlap": self.overlap}
        return {**base, **changes}

    def save(self, store: Store, message: str, *, labels: Mapping[str, Mapping[str, Any]] | None = None,
             **schema: Any) -> ImportResult:
        """The next version (parent = this one) with new labels and/or schema entries."""
        spec = VersionSpec(items=self.spec.items, labels=labels if labels is not None else self.spec.labels,
                           hidden=self.spec.hidden, splits=self.spec.splits, tasks=self.spec.tasks,
                           label_schema=self.schema(**schema), split_info=self.spec.split_info, message=message)
        name = self.version.dataset.name
        dv, created = create_version(store, name, RANKING_MODALITY, spec, parent=self.version.id)
        return ImportResult(name, dv, created, len(spec.items))


def load_ranking(store: Store, ref: str | int) -> RankingVersion:
    """Read a ranking version (DataError if the dataset holds another modality)."""
    dv, spec = spec_from_version(store, ref)
    if dv.dataset.modality != RANKING_MODALITY:
        raise DataError(f"{dv.dataset.name}@{dv.version} is a {dv.dataset.modality} dataset, not a ranking dataset "
                        "(make one with `modelfab llm rank candidates`)")
    prompts = {i.key: parse_ranking(i.text) for i in spec.items}
    schema = dict(dv.label_schema)
    return RankingVersion(dv, spec, prompts, dict(schema.get("rankers") or {}),
                          {k: list(v) for k, v in (schema.get("assignments") or {}).items()},
                          int(schema.get("overlap") or 0))


# --- candidates ------------------------------------------------------------------------------------------------


def split_prompt(messages: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """(messages up to the last user turn, the final assistant answer after it as reference or None)."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise DataError("no user message to answer")
    last = users[-1]
    prompt = [dict(m) for m in messages[: last + 1]]
    tail = messages[-1]
    reference = tail["content"] if len(messages) > last + 1 and tail["role"] == "assistant" else None
    return prompt, reference


def _source_prompts(store: Store, ref: str) -> tuple[DatasetVersion, list[tuple[str, list[dict[str, str]], str | None]],
                                                     list[tuple[str, str]], dict[str, str | None]]:
    dv, spec = spec_from_version(store, ref)
    modality = dv.dataset.modality
    if modality not in (SFT_MODALITY, "text"):
        raise ConfigError(f"prompts must come from a chat (SFT) or text dataset; {dv.dataset.name} is {modality}")
    prompts: list[tuple[str, list[dict[str, str]], str | None]] = []
    skipped: list[tuple[str, str]] = []
    for item in spec.items:
        try:
            if modality == SFT_MODALITY:
                prompt, reference = split_prompt(chat_messages(item.text))
            else:
                if not (item.text or "").strip():
                    raise DataError("empty text")
                prompt, reference = [{"role": "user", "content": str(item.text)}], None
        except DataError as exc:
            skipped.append((item.key, str(exc)))
            continue
        prompts.append((item.key, prompt, reference))
    return dv, prompts, skipped, {k: v for k, v in spec.splits.items()}


def candidates(store: Store, model_ref: str, prompts_ref: str, n: int, name: str, *, max_new_tokens: int = 64,
               temperature: float = 0.8, seed: int = 0) -> ImportResult:
    """A ranking dataset: ``n`` sampled candidates (ids ``c0``..) per prompt of ``prompts_ref``.

    Prompts come from a chat dataset (messages up to the last user turn; a final assistant answer
    becomes the ``reference``) or a text dataset (the text is the user message). Candidate ``i`` is
    sampled with ``seed + i``; identical candidates are kept under their own ids. Prompts that do
    not fit the model's context (with ``max_new_tokens``) are skipped and reported. Splits follow
    the source when it has train/val/test splits for every prompt, else a keyed split by prompt key.
    """
    from modelfab.llm.models import ContextLengthError, load_chat_model
    from modelfab.llm.templates import quiet_loading

    if n < 2:
        raise ConfigError(f"n: ranking needs at least 2 candidates per prompt, got {n}")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ConfigError(f"temperature: must be >= 0, got {temperature}")
    source, prompts, skipped, source_splits = _source_prompts(store, prompts_ref)
    if not prompts:
        raise DataError(f"{prompts_ref}: no usable prompts ({len(skipped)} skipped)")
    with quiet_loading():
        chat = load_chat_model(store, model_ref)
    generator = f"{chat.model.name}:{chat.model.version}"
    source_ref = f"{source.dataset.name}@{source.version}"
    config = {"model": generator, "prompts": source_ref, "n": n, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "seed": seed, "name": name}
    with tracked_run(store, "llm-candidates", config=config, inputs={"model": chat.model.id}) as run:
        items: list[ItemSpec] = []
        tokens = 0
        for key, prompt, reference in track(prompts, len(prompts), f"generating {n} candidates per prompt"):
            try:
                chat.encode(prompt, max_new_tokens)
            except ContextLengthError as exc:
                skipped.append((key, str(exc)))
                continue
            texts = []
            for i in range(n):
                gen = chat.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + i)
                texts.append((f"c{i}", gen.text.strip()))
                tokens += gen.completion_tokens
            items.append(ranking_item(key, prompt, texts, reference, chat.model.id,
                                      {"generator_ref": generator, "source": source_ref}))
        if not items:
            raise DataError(f"{prompts_ref}: no prompt fits the context of {generator} ({len(skipped)} skipped)")
        keys = [i.key for i in items]
        if all(source_splits.get(k) in LLM_SPLITS for k in keys):
            splits = {k: str(source_splits[k]) for k in keys}
            info: dict[str, Any] = {"from": source_ref}
        else:
            splits, info = keyed_splits(keys, seed)
        spec = VersionSpec(items=items, splits=splits, split_info=info,
                           label_schema={"rankers": {}, "assignments": {}, "overlap": 0, "generator": generator,
                                         "source": source_ref},
                           message=f"{n} candidates per prompt from {generator}")
        dv, created = create_version(store, name, RANKING_MODALITY, spec)
    finish_run(store, run.id, outputs={"dataset": f"{name}@{dv.version}", "created": created},
               metrics={"prompts": len(items), "candidates": len(items) * n, "tokens": tokens,
                        "skipped": len(skipped)})
    return ImportResult(name, dv, created, len(items), skipped)


# --- assignments -----------------------------------------------------------------------------------------------


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def assignment_plan(keys: Sequence[str], annotators: Sequence[str], overlap: int,
                    seed: int = 0) -> dict[str, list[str]]:
    """Give every key to ``overlap`` distinct annotators; loads differ by at most one; deterministic.

    Items are visited in a seeded hash order; each takes the least-loaded annotators, ties broken
    first by how many items an annotator already shares with those picked for this item (so every
    annotator pair gets overlapping items to measure agreement on), then by a seeded order.
    """
    names = [check_annotator(a) for a in annotators]
    if len(set(names)) != len(names):
        raise ConfigError(f"annotators: duplicate names in {names}")
    if not names:
        raise ConfigError("annotators: give at least one")
    if overlap < 1 or overlap > len(names):
        raise ConfigError(f"overlap: must be between 1 and the number of annotators ({len(names)}), got {overlap}")
    order = {a: _rank_key(seed, a) for a in names}
    load = dict.fromkeys(names, 0)
    shared: Counter[tuple[str, str]] = Counter()
    plan: dict[str, list[str]] = {a: [] for a in names}
    for key in sorted(keys, key=lambda k: _rank_key(seed, k)):
        picked: list[str] = []
        for _ in range(overlap):
            best = min((a for a in names if a not in picked),
                       key=lambda a: (load[a], sum(shared[_pair(a, p)] for p in picked), order[a]))
            picked.append(best)
            load[best] += 1
        for i, a in enumerate(picked):
            plan[a].append(key)
            for b in picked[i + 1:]:
                shared[_pair(a, b)] += 1
    return {a: sorted(v) for a, v in plan.items()}


def assign(store: Store, ref: str, annotators: Sequence[str], overlap: int, seed: int = 0) -> ImportResult:
    """A new version whose schema assigns every item to ``overlap`` of ``annotators`` (replacing old ones)."""
    rv = load_ranking(store, ref)
    plan = assignment_plan(list(rv.prompts), annotators, overlap, seed)
    return rv.save(store, f"assign {len(rv.prompts)} items to {len(plan)} annotators, overlap {overlap}",
                   assignments=plan, overlap=overlap, assignment_seed=seed)


def _assigned(rv: RankingVersion, annotator: str) -> list[str]:
    check_annotator(annotator)
    if not rv.assignments:
        return list(rv.prompts)
    if annotator not in rv.assignments:
        raise NotFoundError(f"annotator {annotator!r} has no assignments in {rv.ref}; "
                            f"assigned: {', '.join(sorted(rv.assignments))}")
    return list(rv.assignments[annotator])


def task_records(store: Store, ref: str, annotator: str) -> list[dict[str, Any]]:
    """The annotator's items (all items when nothing is assigned) with candidates in a per-annotator order.

    The order is shuffled deterministically per (annotator, item) against position bias; ids are kept.
    The reference answer is not shown.
    """
    rv = load_ranking(store, ref)
    out = []
    for key in _assigned(rv, annotator):
        p = rv.prompts[key]
        cands = [{"id": c, "text": t} for c, t in p.candidates.items()]
        random.Random(f"{annotator}\x00{key}").shuffle(cands)
        out.append({"key": key, "prompt": p.prompt, "candidates": cands})
    return out


def export_tasks(store: Store, ref: str, annotator: str, path: Path | None) -> tuple[int, str]:
    """Write the annotator's tasks as JSONL to ``path`` (atomically) or return the text; (count, text)."""
    records = task_records(store, ref, annotator)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    if path is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return len(records), text


class RankingFileError(DataError):
    """A rankings file with problems; ``errors`` holds every one (``file:line: message``)."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        more = f" (+{len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}; nothing imported from {path.name}")
        self.errors = errors


def _check_ranking(value: Any, ids: Sequence[str]) -> str | None:
    """The problem with one ranking, or None."""
    if not isinstance(value, list) or not value:
        return "'ranking' must be a non-empty list of candidate ids, best first"
    if any(isinstance(v, list) for v in value):
        return "ties are not allowed (a nested list ranks candidates equally); give a full order"
    if not all(isinstance(v, str) for v in value):
        return "'ranking' must list candidate ids (strings)"
    twice = sorted(c for c, k in Counter(value).items() if k > 1)
    if twice:
        return f"tie: candidate {twice[0]!r} appears {Counter(value)[twice[0]]} times"
    unknown = [v for v in value if v not in ids]
    if unknown:
        return f"unknown candidates {', '.join(unknown)} (item has {', '.join(ids)})"
    missing = [c for c in ids if c not in value]
    if missing:
        return f"incomplete ranking: missing {', '.join(missing)} (rank every candidate)"
    return None


def parse_rankings(path: Path, prompts: Mapping[str, RankingPrompt], allowed: set[str] | None,
                   annotator: str = "") -> dict[str, list[str]]:
    """Read ``{"key", "ranking"}`` JSONL lines; every problem is collected before raising RankingFileError."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    errors: list[str] = []
    out: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: invalid JSON ({exc.msg})")
            continue
        key = rec.get("key") if isinstance(rec, dict) else None
        if not isinstance(key, str) or "ranking" not in rec:
            errors.append(f'{where}: expected {{"key": ..., "ranking": [ids best -> worst]}}')
            continue
        if key not in prompts:
            errors.append(f"{where}: unknown item key {key!r}")
            continue
        if allowed is not None and key not in allowed:
            errors.append(f"{where}: item {key!r} is not assigned to annotator {annotator!r}")
            continue
        if key in first_line:
            errors.append(f"{where}: item {key!r} ranked twice (first at line {first_line[key]})")
            continue
        first_line[key] = n
        problem = _check_ranking(rec["ranking"], prompts[key].ids)
        if problem:
            errors.append(f"{where}: {key}: {problem}")
            continue
        out[key] = list(rec["ranking"])
    if errors:
        raise RankingFileError(path, errors)
    if not out:
        raise DataError(f"{path}: no rankings")
    return out


def import_rankings(store: Store, ref: str, path: Path, annotator: str) -> ImportResult:
    """A new version with ``annotator``'s rankings (labels ``rank:<annotator>``, ranker kind human).

    Keys must be assigned to the annotator (any key when the version has no assignments); rankings
    must be complete orders of the item's candidates. Re-importing replaces that annotator's rankings
    of the items in the file and keeps the rest.
    """
    rv = load_ranking(store, ref)
    allowed = set(_assigned(rv, annotator)) if rv.assignments else None
    incoming = parse_rankings(path, rv.prompts, allowed, annotator)
    labels = {k: dict(v) for k, v in rv.spec.labels.items()}
    for key, ranking in incoming.items():
        labels.setdefault(key, {})[rank_field(annotator)] = ranking
    rankers = {**rv.rankers, annotator: {"kind": HUMAN}}
    name = rv.version.dataset.name
    config = {"source": str(path), "base": rv.ref, "annotator": annotator}
    with tracked_run(store, "llm-rankings", config=config) as run:
        result = rv.save(store, f"{len(incoming)} rankings by {annotator} from {path.name}", labels=labels,
                         rankers=rankers)
    finish_run(store, run.id, outputs={"dataset": f"{name}@{result.version.version}", "created": result.created},
               metrics={"rankings": len(incoming)})
    result.items = len(incoming)
    return result


# --- synthetic rankings ----------------------------------------------------------------------------------------

RULES = {"reference-f1": token_f1}  # the QA scoring rule's F1 (modelfab.llm.rag.scoring): one definition


def rank_by_rule(prompt: RankingPrompt, rule: str) -> list[str]:
    """Candidate ids best -> worst by ``rule``'s score against the reference (ties: listed order)."""
    score = RULES[rule]
    assert prompt.reference is not None
    ids = prompt.ids
    scores = {c: score(t, prompt.reference) for c, t in prompt.candidates.items()}
    return sorted(ids, key=lambda c: (-scores[c], ids.index(c)))


def synthetic_rankings(store: Store, ref: str, rule: str = "reference-f1") -> ImportResult:
    """A new version ranked by a rule (ranker ``rule:<rule>``, kind synthetic); items without a
    reference answer are skipped and listed in ``skipped``."""
    if rule not in RULES:
        raise ConfigError(f"rule: unknown {rule!r}; known: {', '.join(sorted(RULES))}")
    rv = load_ranking(store, ref)
    ranker = f"rule:{rule}"
    labels = {k: dict(v) for k, v in rv.spec.labels.items()}
    skipped: list[tuple[str, str]] = []
    ranked = 0
    for key, prompt in rv.prompts.items():
        if prompt.reference is None or not prompt.reference.strip():
            skipped.append((key, "no reference answer"))
            continue
        labels.setdefault(key, {})[rank_field(ranker)] = rank_by_rule(prompt, rule)
        ranked += 1
    if not ranked:
        raise DataError(f"{rv.ref}: no item has a reference answer to rank by {rule}")
    rankers = {**rv.rankers, ranker: {"kind": SYNTHETIC, "rule": rule}}
    result = rv.save(store, f"synthetic rankings by {rule} ({ranked} items)", labels=labels, rankers=rankers)
    result.items = ranked
    result.skipped = skipped
    return result


# --- agreement -------------------------------------------------------------------------------------------------


def agreement(store: Store, ref: str, *, include_synthetic: bool = False) -> dict[str, Any]:
    """Kendall tau and pairwise agreement per ranker pair (on shared items), their mean, and per item.

    Human rankers only, unless ``include_synthetic`` (then rule rankers are compared like annotators).
    """
    rv = load_ranking(store, ref)
    all_rankings = rv.rankings()
    used = {r: v for r, v in all_rankings.items() if include_synthetic or rv.kind(r) == HUMAN}
    if len(used) < 2:
        have = ", ".join(sorted(all_rankings)) or "none"
        raise DataError(f"{rv.ref}: agreement needs rankings from at least two "
                        f"{'rankers' if include_synthetic else 'human annotators'} (rankings by: {have})")
    pairs = annotator_agreement(used)
    tau, pairwise = mean_agreement(pairs)
    return {"dataset": rv.ref, "rankers": {r: rv.kind(r) for r in sorted(used)},
            "pairs": [p.as_dict() for p in pairs], "mean": {"kendall_tau": tau, "pairwise": pairwise},
            "items": [i.as_dict() for i in item_agreement(used)]}


def ranking_summary(store: Store, ref: str) -> dict[str, Any]:
    """Items, rankers (kind, items ranked) and assignments (items, done) of a ranking version."""
    rv = load_ranking(store, ref)
    rankings = rv.rankings()
    rankers = {r: {"kind": rv.kind(r), "ranked": len(v)} for r, v in sorted(rankings.items())}
    assignments = {a: {"items": len(keys), "done": sum(1 for k in keys if k in rankings.get(a, {}))}
                   for a, keys in sorted(rv.assignments.items())}
    return {"dataset": rv.ref, "items": len(rv.prompts), "overlap": rv.overlap, "rankers": rankers,
            "assignments": assignments, "with_reference": sum(1 for p in rv.prompts.values() if p.reference)}


__all__ = ["HUMAN", "RULES", "SYNTHETIC", "RankingFileError", "RankingVersion", "agreement", "assign",
           "assignment_plan", "candidates", "check_annotator", "export_tasks",
           "import_rankings", "load_ranking", "parse_rankings", "rank_by_rule",
           "ranking_summary", "split_prompt", "synthetic_rankings", "task_records", "token_f1"]
