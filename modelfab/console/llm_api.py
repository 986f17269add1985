"""Console routes of the language-model track: the prompt-template editor and ranking of candidate responses.

Both go through the library (:mod:`modelfab.llm.templates`, :mod:`modelfab.llm.ranking`), so validation
is the CLI's: the editor writes the template and the pasted table to files under
``MODELFAB_HOME/console/templates/`` and reads them with the library's readers; submitted rankings are
written as JSONL under ``MODELFAB_HOME/console/rankings/`` and applied by
:func:`modelfab.llm.ranking.import_rankings`. Previews read; rendering and ranking need annotator.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from modelfab.console.context import Caller, ConsoleContext, Ctx, require, who
from modelfab.core.errors import ConfigError, DataError, ModelfabError
from modelfab.llm import ranking
from modelfab.llm.formats import RANKING_MODALITY, rank_field
from modelfab.llm.models import CHAT_TASK
from modelfab.llm.templates import (
    PromptTemplate,
    SourceRow,
    TokenCounter,
    Validation,
    load_template,
    table_rows,
    validate,
)
from modelfab.serve.auth import Principal
from modelfab.store.datasets import get_version, list_datasets
from modelfab.store.schema import Model, utcnow

router = APIRouter(prefix="/llm")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_TEMPLATE = 64_000  # characters
MAX_TABLE = 5_000_000  # characters of pasted or uploaded CSV/JSONL
MAX_PROBLEMS = 200  # problems listed in a preview (the counts cover all)
COUNTERS_KEPT = 4  # tokenizers kept in memory for live previews
_counters: OrderedDict[str, tuple[TokenCounter, int, str]] = OrderedDict()
_counters_lock = threading.Lock()
_loading_lock = threading.Lock()
_rank_lock = threading.Lock()  # one ranking import at a time: each builds on the newest version


def _stamp() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%S%f")


def _scrub(exc: ModelfabError, folder: Path) -> ModelfabError:
    """The same error with the server-side folder left out of its message (the browser sees file names)."""
    text = str(exc).replace(f"{folder}/", "").replace(str(folder), "")
    if isinstance(exc, ranking.RankingFileError):
        errors = [e.replace(f"{folder}/", "") for e in exc.errors]
        shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        return DataError(f"{len(errors)} problem{'s' if len(errors) > 1 else ''} in the rankings: {shown}")
    try:
        out = type(exc)(text)
    except TypeError:
        out = DataError(text)
    out.http_status = exc.http_status
    return out


# --- causal LMs for token counting -----------------------------------------------------------------------------


def _counting_ref(ctx: ConsoleContext, ref: str) -> str:
    """The model whose tokenizer counts for ``ref``: itself, or the base of a LoRA chat model."""
    from modelfab.llm.models import lora_info

    info = lora_info(ctx.store, ctx.store.get_model(ref))
    return ref if info is None else ctx.store.get_model(str(info["base"])).id


def is_causal_lm(m: Model) -> bool:
    """A chat model or a causal-LM backbone (architecture modality ``lm``)."""
    return m.task == CHAT_TASK or (m.architecture or {}).get("modality") == "lm"


@router.get("/models")
def lm_models(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """Registered causal LMs (architecture modality ``lm`` or task ``chat``) for the template editor."""
    with ctx.store.session() as s:
        rows = [m for m in s.scalars(select(Model).order_by(Model.name, Model.version)).all() if is_causal_lm(m)]
    return {"models": [{"id": m.id, "ref": f"{m.name}:{m.version}", "name": m.name, "version": m.version,
                        "tier": m.tier, "task": m.task} for m in rows]}


def _counter(ctx: ConsoleContext, ref: str) -> tuple[TokenCounter, int, str]:
    """(token counter with the model's chat template, its context length, its name); tokenizers are cached."""
    from modelfab.llm.models import context_length, load_base
    from modelfab.llm.templates import quiet_loading

    model = ctx.store.get_model(ref)

    def cached() -> tuple[TokenCounter, int, str] | None:
        with _counters_lock:
            if model.id in _counters:
                _counters.move_to_end(model.id)
            return _counters.get(model.id)

    hit = cached()
    if hit is not None:
        return hit
    with _loading_lock:  # one load at a time: a burst of previews waits for the first and then finds it cached
        hit = cached()
        if hit is not None:
            return hit
        with quiet_loading():
            backbone, _ = load_base(ctx.store, _counting_ref(ctx, model.id))
        entry = (TokenCounter(backbone.tokenizer), context_length(backbone), f"{model.name}:{model.version}")
        with _counters_lock:
            _counters[model.id] = entry
            while len(_counters) > COUNTERS_KEPT:
                _counters.popitem(last=False)
    return entry


# --- prompt templates ------------------------------------------------------------------------------------------


class TemplateBody(BaseModel):
    template: str = Field(..., max_length=MAX_TEMPLATE)
    table: str = Field(..., max_length=MAX_TABLE)
    format: Literal["csv", "jsonl"] | None = None  # None: JSONL when the first character is '{', else CSV
    model: str | None = Field(None, max_length=300)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    n: int = Field(3, ge=0, le=50)


class RenderBody(TemplateBody):
    name: str = Field(..., pattern=NAME_RE)
    model: str = Field(..., min_length=1, max_length=300)
    skip_invalid: bool = False
    seed: int = 0


def _table_format(body: TemplateBody) -> str:
    if body.format:
        return body.format
    return "jsonl" if body.table.lstrip().startswith("{") else "csv"


def _write_sources(folder: Path, body: TemplateBody, stem: str) -> tuple[Path, Path]:
    """Write the template (``<stem>.yaml``) and the table (``rows.csv|jsonl``) into ``folder``."""
    if not body.table.strip():
        raise DataError("table: paste or upload a CSV or JSONL table (one sample per row)")
    folder.mkdir(parents=True, exist_ok=True)
    template = folder / f"{stem}.yaml"
    rows = folder / f"rows.{_table_format(body)}"
    template.write_text(body.template, encoding="utf-8")
    rows.write_text(body.table, encoding="utf-8")
    return template, rows


def _check(ctx: ConsoleContext, template: PromptTemplate, rows: list[SourceRow], source: str,
           body: TemplateBody) -> Validation:
    """Validate every row (as ``preview`` does), counting tokens with a cached tokenizer."""
    limit: int | None
    if body.model:
        counter, context, model = _counter(ctx, body.model)
        if body.max_tokens is not None and body.max_tokens <= context:
            limit, reason = body.max_tokens, "max tokens"
        else:
            limit, reason = context, f"context of {model}"
    else:
        counter, limit, reason = TokenCounter(), body.max_tokens, "max tokens"
    return validate(template, rows, counter, source=source, limit=limit, limit_reason=reason)


@router.post("/template/preview")
def template_preview(body: TemplateBody, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The first ``n`` rendered chats and every validation problem (writes no dataset).

    A template that does not parse (YAML, Jinja syntax, unknown keys) or an unreadable table is a
    422 whose message names the line; per-row problems (undefined variables, over-length, duplicates,
    empty fields) come back in ``problems``.
    """
    folder = ctx.store.settings.home / "console" / "templates" / f"preview-{uuid.uuid4().hex}"
    try:
        template_path, rows_path = _write_sources(folder, body, "template")
        template = load_template(template_path)
        rows = table_rows(rows_path)
        check = _check(ctx, template, rows, rows_path.name, body)
        columns = sorted({k for r in rows for k in r.variables})
    except ModelfabError as exc:
        raise _scrub(exc, folder) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = check.as_dict()
    out["problems"] = out["problems"][:MAX_PROBLEMS]
    out.update(samples=[s.as_dict() for s in check.samples[: body.n]], variables=sorted(template.variables),
               columns=columns, missing_columns=sorted(template.variables - set(columns)),
               format=rows_path.suffix.lstrip("."), token_count="chat template" if check.exact_tokens else
               "estimate (whitespace words; pick a model for exact counts)")
    return out


@router.post("/template/render")
def template_render(body: RenderBody, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Render every row into the next version of SFT dataset ``name`` (annotator or above).

    The template and table are kept under ``MODELFAB_HOME/console/templates/<name>-<time>-<key>/``
    as the record of what was rendered (the ``llm-template`` run points at them).
    """
    from modelfab.llm.templates import render_dataset

    require(principal, "annotator", "render datasets")
    st = ctx.store
    folder = st.settings.home / "console" / "templates" / f"{body.name}-{_stamp()}-{principal.key_id}"
    try:
        template_path, rows_path = _write_sources(folder, body, body.name)
        counting = _counting_ref(ctx, body.model)
        result, check = render_dataset(st, template_path, model=counting, name=body.name, rows=rows_path,
                                       max_tokens=body.max_tokens, skip_invalid=body.skip_invalid, seed=body.seed)
    except ModelfabError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise _scrub(exc, folder) from None
    tokens = [s.tokens for s in check.samples]
    return {"dataset": result.ref, "name": result.dataset, "version": result.version.version,
            "created": result.created, "items": result.items, "template": check.template,
            "tokens": {"total": sum(tokens), "max": max(tokens)}, "limit": check.limit,
            "skipped": [p.as_dict() for p in check.problems], "by": who(principal)}


# --- ranking ---------------------------------------------------------------------------------------------------


@router.get("/ranking/datasets")
def ranking_datasets(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """Ranking datasets (modality ``ranking``) with their newest version."""
    return {"datasets": [{"name": ds.name, "latest": v.version if v else None, "items": v.item_count if v else 0,
                          "message": v.message if v else ""}
                         for ds, v in list_datasets(ctx.store) if ds.modality == RANKING_MODALITY]}


def annotator_of(ctx: ConsoleContext, principal: Principal, override: str | None) -> str:
    """Who ranks: the API key's name; with sign-in off (``--no-auth``) ``override``, else ``console``."""
    name = (override or "console") if not ctx.auth else principal.name
    if not name:
        raise ConfigError(f"key {principal.key_id} has no name to rank as; create a key with "
                          "`modelfab keys create --role annotator --name NAME`")
    try:
        return ranking.check_annotator(name)
    except ConfigError:
        raise ConfigError(f"{name!r} cannot be an annotator name (letters, digits, '_', '.', '-'; no spaces "
                          "or ':'); create a key with such a --name") from None


def _ref(ctx: ConsoleContext, name: str, version: int | None) -> str:
    dv = get_version(ctx.store, f"{name}@{version}" if version is not None else name)
    return f"{dv.dataset.name}@{dv.version}"


@router.get("/ranking/{name}/tasks")
def ranking_tasks(name: str, ctx: Ctx, principal: Caller, version: int | None = Query(None, ge=1),
                  annotator: str | None = Query(None, max_length=64)) -> dict[str, Any]:
    """The items assigned to the signed-in key's name (all items when the version assigns none), each with
    its prompt, candidates (shuffled per annotator) and this annotator's ranking so far (or null)."""
    who_ranks = annotator_of(ctx, principal, annotator)
    ref = _ref(ctx, name, version)
    rv = ranking.load_ranking(ctx.store, ref)
    tasks = ranking.task_records(ctx.store, ref, who_ranks)
    mine = rv.rankings().get(who_ranks, {})
    for t in tasks:
        t["ranked"] = mine.get(t["key"])
    return {"dataset": ref, "annotator": who_ranks, "assigned": bool(rv.assignments), "total": len(tasks),
            "done": sum(1 for t in tasks if t["ranked"]), "items": tasks,
            "summary": ranking.ranking_summary(ctx.store, ref)}


class RankingsBody(BaseModel):
    rankings: dict[str, list[str]] = Field(..., min_length=1, max_length=100_000)
    annotator: str | None = Field(None, max_length=64)


@router.post("/ranking/{name}/rankings")
def submit_rankings(name: str, body: RankingsBody, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Save rankings (item key -> candidate ids, best first) as a new version (annotator or above).

    They are written as JSONL under ``MODELFAB_HOME/console/rankings/`` and imported on the dataset's
    NEWEST version (so rankings submitted meanwhile by others are kept), with the CLI's validation.
    """
    require(principal, "annotator", "submit rankings")
    who_ranks = annotator_of(ctx, principal, body.annotator)
    st = ctx.store
    folder = st.settings.home / "console" / "rankings"
    folder.mkdir(parents=True, exist_ok=True)
    with _rank_lock:
        base = _ref(ctx, name, None)
        path = folder / f"{name}-from-v{base.rsplit('@', 1)[1]}-{who_ranks}-{_stamp()}.jsonl"
        path.write_text("".join(json.dumps({"key": k, "ranking": v}, ensure_ascii=False) + "\n"
                                for k, v in body.rankings.items()), encoding="utf-8")
        try:
            result = ranking.import_rankings(st, base, path, who_ranks)
        except ModelfabError as exc:
            raise _scrub(exc, folder) from None
    return {"dataset": result.ref, "parent": base, "created": result.created, "rankings": result.items,
            "annotator": who_ranks, "field": rank_field(who_ranks), "by": who(principal)}


@router.get("/ranking/{name}/agreement")
def ranking_agreement(name: str, ctx: Ctx, _: Caller, version: int | None = Query(None, ge=1),
                      include_synthetic: bool = False) -> dict[str, Any]:
    """Kendall tau and pairwise agreement per annotator pair (items both ranked), their mean, and per item.

    422 with the reason while fewer than two annotators have ranked.
    """
    return ranking.agreement(ctx.store, _ref(ctx, name, version), include_synthetic=include_synthetic)


__all__ = ["annotator_of", "is_causal_lm", "router"]
