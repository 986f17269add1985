"""SFT datasets from prompt templates: Jinja2 (sandboxed, strict) chats filled from a table or documents.

A template file (YAML or JSON) holds Jinja strings ``system`` (optional), ``user`` and ``assistant``
(absent for prompt-only datasets), plus optional ``name`` and ``description``::

    name: permits
    system: You answer questions about city services.
    user: How do I {{ action }} a {{ service }}?
    assistant: "{{ answer }}"

Variables come from a CSV/JSONL table (one sample per row; null values count as missing) or from a
folder of ``.md``/``.txt`` documents (one sample per file; variables ``document``, ``title`` (first
heading or file stem) and ``path``). Rendered fields are stripped of surrounding whitespace; an empty
``system`` is left out, an empty ``user``/``assistant`` is a problem. Every row is checked before
anything is written: undefined variables, samples over the token limit (counted with the model's chat
template), exact duplicates and empty fields are all reported together.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from modelfab.core.errors import ConfigError, DataError, MissingExtraError
from modelfab.data.importers import _read_rows
from modelfab.data.result import ImportResult
from modelfab.llm.formats import SFT_MODALITY, SFT_TASKS, chat_text, keyed_splits, sft_item
from modelfab.llm.models import Message, render_chat
from modelfab.store.datasets import VersionSpec, create_version
from modelfab.store.runs import finish_run, tracked_run

try:
    import jinja2
    from jinja2 import StrictUndefined, meta
    from jinja2.sandbox import SandboxedEnvironment
except ImportError:  # the llm extra
    raise MissingExtraError("jinja2", "llm") from None

if TYPE_CHECKING:
    from modelfab.store.store import Store

FIELDS = ("system", "user", "assistant")
_ALLOWED_KEYS = {*FIELDS, "name", "description"}
_DOC_SUFFIXES = (".md", ".txt")
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")


def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass
class PromptTemplate:
    """A parsed, compiled chat template. ``variables``: names the template reads from each row."""

    name: str
    sources: dict[str, str]
    compiled: dict[str, jinja2.Template]
    variables: frozenset[str]
    description: str = ""

    @property
    def has_assistant(self) -> bool:
        return "assistant" in self.sources

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat for one row (raises :class:`jinja2.UndefinedError` on a missing variable)."""
        ctx = {k: v for k, v in variables.items() if v is not None and isinstance(k, str)}
        messages = []
        for role in FIELDS:
            if role in self.compiled:
                content = self.compiled[role].render(ctx).strip()
                if role == "system" and not content:
                    continue
                messages.append({"role": role, "content": content})
        return messages


def parse_template(data: Any, name: str, where: str) -> PromptTemplate:
    """Build a template from a parsed YAML/JSON mapping; ``where`` names the file in errors."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a mapping with 'user' (and 'system', 'assistant') templates")
    unknown = sorted(str(k) for k in data if k not in _ALLOWED_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown keys {unknown}; allowed: {', '.join(sorted(_ALLOWED_KEYS))}")
    if "user" not in data:
        raise DataError(f"{where}: no 'user' template")
    env = _env()
    sources: dict[str, str] = {}
    compiled: dict[str, jinja2.Template] = {}
    variables: set[str] = set()
    for role in FIELDS:
        if role not in data or data[role] is None:
            continue
        src = data[role]
        if not isinstance(src, str):
            raise DataError(f"{where}: '{role}' must be a string template, got {type(src).__name__}")
        try:
            variables |= meta.find_undeclared_variables(env.parse(src))
            compiled[role] = env.from_string(src)
        except jinja2.TemplateSyntaxError as exc:
            raise DataError(f"{where}: '{role}' template, line {exc.lineno}: {exc.message}") from None
        sources[role] = src
    label = data.get("name")
    return PromptTemplate(str(label) if label else name, sources, compiled,
                          frozenset(variables - set(env.globals)), str(data.get("description") or ""))


def load_template(path: Path) -> PromptTemplate:
    """Read a YAML or JSON template file (named by its ``name`` key, else the file stem)."""
    if not path.is_file():
        raise DataError(f"{path}: no such template file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataError(f"{path}: invalid YAML/JSON{at}: {problem}") from None
    return parse_template(data, path.stem, str(path))


# --- rows ------------------------------------------------------------------------------------------------------


@dataclass
class SourceRow:
    """One source of variables: a table row or a document. ``where`` names it in messages."""

    number: int
    key: str
    where: str
    variables: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def table_rows(path: Path) -> list[SourceRow]:
    """One row per table record (CSV or JSONL), numbered from 1, keyed ``row-0000001``."""
    records = _read_rows(path)
    if not records:
        raise DataError(f"{path}: no rows")
    out = []
    for n, rec in enumerate(records, 1):
        variables = {k: v for k, v in rec.items() if isinstance(k, str)}
        out.append(SourceRow(n, f"row-{n:07d}", f"row {n}", variables, {"row": n, "vars": variables}))
    return out


def _title(text: str, stem: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            if heading:
                return heading
    return stem


def document_rows(folder: Path) -> list[SourceRow]:
    """One row per ``.md``/``.txt`` file under ``folder`` (sorted, hidden files skipped), keyed by path."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _DOC_SUFFIXES
                   and not any(x.startswith(".") for x in p.relative_to(folder).parts))
    if not files:
        raise DataError(f"{folder}: no .md or .txt documents")
    out = []
    for n, p in enumerate(files, 1):
        rel = p.relative_to(folder).as_posix()
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text") from None
        title = _title(text, p.stem)
        out.append(SourceRow(n, rel, rel, {"document": text, "title": title, "path": rel},
                             {"path": rel, "title": title}))
    return out


def read_rows(rows: Path | None, docs: Path | None) -> tuple[list[SourceRow], str]:
    """Rows from exactly one of a table or a documents folder, and a description of the source."""
    if (rows is None) == (docs is None):
        raise ConfigError("give exactly one of --rows FILE or --docs DIR")
    if rows is not None:
        return table_rows(rows), str(rows)
    assert docs is not None
    return document_rows(docs), str(docs)


# --- validation ------------------------------------------------------------------------------------------------


class TokenCounter:
    """Counts a chat's tokens through a tokenizer's chat template, or estimates by whitespace without one."""

    def __init__(self, tokenizer: Any | None = None) -> None:
        self.tokenizer = tokenizer

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def render(self, messages: Sequence[Message]) -> str:
        """The chat as the model sees it (generation prompt added when the last turn is not the assistant's)."""
        if self.tokenizer is None:
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return render_chat(self.tokenizer, messages, add_generation_prompt=messages[-1]["role"] != "assistant")

    def count(self, messages: Sequence[Message]) -> int:
        if self.tokenizer is None:
            return sum(len(m["content"].split()) for m in messages)
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])


@dataclass
class Problem:
    """One invalid row. ``kind``: undefined, empty, duplicate, too-long or error."""

    kind: str
    where: str
    key: str
    message: str

    @property
    def line(self) -> str:
        return f"{self.where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "key": self.key, "message": self.message}


@dataclass
class Sample:
    """A valid rendered row."""

    row: SourceRow
    messages: list[dict[str, str]]
    tokens: int
    rendered: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.row.key, "where": self.row.where, "messages": self.messages, "tokens": self.tokens,
                "rendered": self.rendered}


@dataclass
class Validation:
    """The outcome of rendering every row: valid samples and every problem found."""

    template: str
    source: str
    rows: int
    samples: list[Sample]
    problems: list[Problem]
    limit: int | None
    limit_reason: str
    exact_tokens: bool

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def summary(self) -> str:
        """One line: how many rows are invalid, by kind, and the first problem."""
        if not self.problems:
            return f"{self.rows} rows, all valid"
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts().items())
        return f"{len(self.problems)} of {self.rows} rows invalid ({kinds}); first: {self.problems[0].line}"

    def as_dict(self) -> dict[str, Any]:
        return {"template": self.template, "source": self.source, "rows": self.rows, "valid": len(self.samples),
                "problems": [p.as_dict() for p in self.problems], "counts": self.counts(), "limit": self.limit,
                "limit_reason": self.limit_reason,
                "token_count": "chat template" if self.exact_tokens else "estimate (whitespace words, no --model)"}


def _undefined_message(template: PromptTemplate, row: SourceRow, exc: jinja2.UndefinedError) -> str:
    given = {k for k, v in row.variables.items() if v is not None}
    missing = sorted(template.variables - given)
    if missing:
        names = ", ".join(repr(m) for m in missing)
        return f"undefined variable{'s' if len(missing) > 1 else ''} {names}"
    m = _UNDEFINED.match(exc.message or "")
    return f"undefined variable {m.group(1)!r}" if m else f"undefined: {exc.message}"


def validate(template: PromptTemplate, rows: Sequence[SourceRow], counter: TokenCounter, *, source: str = "",
             limit: int | None = None, limit_reason: str = "--max-tokens") -> Validation:
    """Render every row; at most one problem per row (checked in order: render, empty, duplicate, length)."""
    samples: list[Sample] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for row in rows:
        try:
            messages = template.render(row.variables)
        except jinja2.UndefinedError as exc:
            problems.append(Problem("undefined", row.where, row.key, _undefined_message(template, row, exc)))
            continue
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            problems.append(Problem("error", row.where, row.key, f"template error: {exc}".splitlines()[0]))
            continue
        empty = [m["role"] for m in messages if not m["content"]]
        if empty:
            problems.append(Problem("empty", row.where, row.key, f"rendered {empty[0]!r} is empty"))
            continue
        text = chat_text(messages)
        if text in seen:
            problems.append(Problem("duplicate", row.where, row.key, f"duplicate of {seen[text]}"))
            continue
        seen[text] = row.where
        tokens = counter.count(messages)
        if limit is not None and tokens > limit:
            problems.append(Problem("too-long", row.where, row.key,
                                    f"{tokens} tokens, over the limit of {limit} ({limit_reason})"))
            continue
        samples.append(Sample(row, messages, tokens, counter.render(messages)))
    return Validation(template.name, source, len(rows), samples, problems, limit, limit_reason, counter.exact)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' weight-loading progress bars (restored after), so errors stay one line."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _counter_and_limit(store: Store, model: str | None, max_tokens: int | None) -> tuple[TokenCounter, int | None, str]:
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens: must be >= 1, got {max_tokens}")
    if model is None:
        return TokenCounter(), max_tokens, "--max-tokens"
    from modelfab.llm.models import context_length, load_base

    with quiet_loading():
        backbone, row = load_base(store, model)
    context = context_length(backbone)
    if max_tokens is not None and max_tokens <= context:
        return TokenCounter(backbone.tokenizer), max_tokens, "--max-tokens"
    return TokenCounter(backbone.tokenizer), context, f"context of {row.name}:{row.version}"


def preview(store: Store, template_path: Path, *, rows: Path | None = None, docs: Path | None = None,
            model: str | None = None, max_tokens: int | None = None) -> Validation:
    """Render and check every row without writing anything (token counts estimated without ``model``)."""
    template = load_template(template_path)
    source_rows, source = read_rows(rows, docs)
    counter, limit, reason = _counter_and_limit(store, model, max_tokens)
    return validate(template, source_rows, counter, source=source, limit=limit, limit_reason=reason)


def render_dataset(store: Store, template_path: Path, *, model: str, name: str, rows: Path | None = None,
                   docs: Path | None = None, max_tokens: int | None = None, skip_invalid: bool = False,
                   seed: int = 0) -> tuple[ImportResult, Validation]:
    """Write the rendered rows as the next version of SFT dataset ``name`` (modality ``chat``).

    The token limit is ``max_tokens`` capped by the model's context. Any invalid row aborts with a
    one-line :class:`DataError` (first problem + counts) before anything is written, unless
    ``skip_invalid``: then invalid rows are dropped and listed in the result's ``skipped``.
    """
    template = load_template(template_path)
    source_rows, source = read_rows(rows, docs)
    counter, limit, reason = _counter_and_limit(store, model, max_tokens)
    check = validate(template, source_rows, counter, source=source, limit=limit, limit_reason=reason)
    if check.problems and not skip_invalid:
        raise DataError(f"{check.summary()} (nothing written; --skip-invalid drops them)")
    if not check.samples:
        raise DataError(f"{source}: no valid rows ({check.summary()})")
    items = [sft_item(s.row.key, s.messages, s.tokens, template.name, {**s.row.meta, "source": source})
             for s in check.samples]
    splits, info = keyed_splits([i.key for i in items], seed)
    spec = VersionSpec(items=items, splits=splits, tasks=SFT_TASKS, split_info=info,
                       label_schema={"template": template.sources, "model": model, "limit": limit},
                       message=f"template {template.name} over {Path(source).name}")
    config = {"template": str(template_path), "source": source, "model": model, "name": name,
              "max_tokens": max_tokens, "skip_invalid": skip_invalid, "seed": seed}
    with tracked_run(store, "llm-template", config=config) as run:
        dv, created = create_version(store, name, SFT_MODALITY, spec)
    skipped = [(p.key, p.line) for p in check.problems]
    finish_run(store, run.id, outputs={"dataset": f"{name}@{dv.version}", "created": created},
               metrics={"items": len(items), "skipped": len(skipped),
                        "tokens": sum(s.tokens for s in check.samples)})
    return ImportResult(name, dv, created, len(items), skipped), check


__all__ = ["FIELDS", "Problem", "PromptTemplate", "Sample", "SourceRow", "TokenCounter", "Validation",
           "document_rows", "load_template", "parse_template", "preview", "quiet_loading", "read_rows",
           "render_dataset", "table_rows", "validate"]
