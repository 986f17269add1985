"""Read a folder of documents and split them into overlapping chunks for retrieval.

Reading (:func:`read_documents`): ``.md``/``.markdown``/``.txt`` files are used as they are; ``.html``/``.htm``
files are reduced to their visible text with the standard library's ``html.parser`` (scripts, styles,
``<nav>`` and ``role="navigation"`` blocks and Sphinx ``headerlink`` anchors are dropped; block elements
become paragraph breaks).  Folders are walked recursively in sorted order; hidden files and folders
(``.name``) are ignored; any other file is skipped and reported, as is a file that is not UTF-8 (an
error instead with ``strict``) or holds no text.  A document's *text* is what the character offsets of
its chunks (and of QA passages, see :mod:`modelfab.llm.rag.scoring`) refer to.

Headings: Markdown ATX (``# Title``) and setext (``Title`` over ``===``/``---``) lines outside code
fences in ``.md``/``.txt``; ``<h1>``..``<h6>`` (and ``<title>``, at offset 0) in HTML.

Chunking (:func:`chunk_document`): the text is cut into tokens -- the encoder tokenizer's tokens (via
its offset mapping) when one is given, else whitespace-separated words.  Each chunk is a contiguous run
of at most ``chunk_tokens`` tokens; where the run must be cut, the cut goes, in this order of
preference, to the last heading past a quarter of the window, the last paragraph break past half of
it, the last sentence end or line break past half of it, else the window's end.  The next chunk starts
``overlap`` tokens before the cut (so consecutive chunks share exactly ``overlap`` tokens), except after
a cut at a heading, where it starts at the heading.  A chunk's text is the exact slice
``document.text[start:end]``; its heading is the last heading at or before the start of its new
(non-overlapping) text, else the first heading inside it, else empty.  Everything is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from modelfab.core.errors import ConfigError, DataError, NotFoundError

SUPPORTED = {".md": "md", ".markdown": "md", ".txt": "txt", ".html": "html", ".htm": "html"}

Span = tuple[int, int]
TokenSpans = Callable[[str], list[Span]]
"""Text -> character spans of its tokens, in order."""


@dataclass(frozen=True)
class Document:
    """One readable document: its path relative to the folder, kind, text and headings."""

    source: str  # posix path relative to the documents folder
    kind: str  # md | txt | html
    text: str
    headings: tuple[tuple[int, str], ...] = ()  # (char offset in text, title), ascending


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str


@dataclass
class Corpus:
    """The documents of a folder and the files skipped while reading it."""

    folder: Path
    documents: list[Document]
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunk size and overlap, in tokens (encoder tokens, or words without a tokenizer)."""

    chunk_tokens: int = 200
    overlap: int = 40

    def __post_init__(self) -> None:
        if not 8 <= self.chunk_tokens <= 8192:
            raise ConfigError(f"chunk_tokens: must be within 8..8192, got {self.chunk_tokens}")
        if not 0 <= self.overlap < self.chunk_tokens // 2:
            raise ConfigError(f"overlap: must be within 0..{self.chunk_tokens // 2 - 1} (under half of chunk_tokens "
                              f"{self.chunk_tokens}), got {self.overlap}")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text == document.text[start:end]``."""

    source: str
    index: int  # position within its document
    start: int
    end: int
    heading: str
    text: str
    tokens: int

    @property
    def key(self) -> str:
        """Unique item key: ``source#00003`` (zero-padded so that keys sort in document order)."""
        return f"{self.source}#{self.index:05d}"

    @property
    def meta(self) -> dict[str, Any]:
        return {"source": self.source, "start": self.start, "end": self.end, "heading": self.heading}


# -- reading -------------------------------------------------------------------------------------------------------


def read_documents(folder: str | Path, strict: bool = False) -> Corpus:
    """Every supported document under ``folder`` (recursively, sorted by relative path).

    Raises :class:`DataError` when no document is readable; with ``strict``, also on the first file
    that is not UTF-8 text.
    """
    root = Path(folder)
    if not root.exists():
        raise NotFoundError(f"documents folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of documents")
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for path in sorted(_files(root), key=lambda p: p.relative_to(root).as_posix()):
        source = path.relative_to(root).as_posix()
        kind = SUPPORTED.get(path.suffix.lower())
        if kind is None:
            skipped.append(Skipped(source, f"unsupported file type {path.suffix or '(none)'}"))
            continue
        try:
            doc = read_document(path, source, kind)
        except DataError as exc:
            if strict:
                raise
            skipped.append(Skipped(source, str(exc).removeprefix(f"{source}: ")))
            continue
        if doc is None:
            skipped.append(Skipped(source, "no text"))
            continue
        docs.append(doc)
    if not docs:
        exts = ", ".join(sorted(SUPPORTED))
        raise DataError(f"no readable documents in {root} (looked for {exts}; {len(skipped)} files skipped)")
    return Corpus(root, docs, skipped)


def _files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") for p in parts) or not path.is_file():
            continue
        out.append(path)
    return out


def read_document(path: Path, source: str, kind: str) -> Document | None:
    """One file as a :class:`Document`; None when it holds no text.  :class:`DataError` if not UTF-8."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise DataError(f"{source}: binary file (NUL bytes), not text")
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if kind == "html":
        text, headings = html_to_text(raw)
    else:
        text, headings = raw, markdown_headings(raw)
    if not text.strip():
        return None
    return Document(source, kind, text, tuple(headings))


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_headings(text: str) -> list[tuple[int, str]]:
    """(offset of the heading line, title) of ATX and setext headings outside code fences."""
    headings: list[tuple[int, str]] = []
    fence: str | None = None
    offset = 0
    prev: tuple[int, str] | None = None  # (offset, line) of the previous non-heading text line
    for line in text.split("\n"):
        start, offset = offset, offset + len(line) + 1
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            prev = None
            continue
        if fence:
            continue
        atx = _ATX.match(line)
        if atx:
            headings.append((start, atx.group(2).strip()))
            prev = None
        elif _SETEXT.match(line) and prev is not None:
            headings.append((prev[0], prev[1].strip()))
            prev = None
        else:
            prev = (start, line) if line.strip() else None
    return headings


# -- HTML ----------------------------------------------------------------------------------------------------------

_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "header", "hr", "li", "main", "ol", "p", "pre", "section", "summary",
    "table", "tbody", "tfoot", "thead", "tr", "ul",
})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "nav"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr"})
_SEPARATORS = {1: " ", 2: "\n", 3: "\n\n"}


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page with paragraph breaks, and its headings' offsets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.pending = 0  # separator owed before the next text: 0 none, 1 space, 2 newline, 3 blank line
        self.headings: list[tuple[int, str]] = []
        self.title: list[str] = []
        self.in_title = False
        self.skip: tuple[str, int] | None = None  # (tag, nesting depth) of the element being dropped
        self.pre = 0
        self.heading: tuple[int | None, list[str]] | None = None  # (offset, text pieces) of an open heading

    def _break(self, level: int) -> None:
        self.pending = max(self.pending, level)

    def _write(self, piece: str) -> None:
        if self.length and self.pending:
            sep = _SEPARATORS[self.pending]
            self.parts.append(sep)
            self.length += len(sep)
        self.pending = 0
        if self.heading is not None and self.heading[0] is None:
            self.heading = (self.length, self.heading[1])
        self.parts.append(piece)
        self.length += len(piece)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip is not None:
            if tag == self.skip[0] and tag not in _VOID:
                self.skip = (tag, self.skip[1] + 1)
            return
        if tag == "title":
            self.in_title = True
            return
        attr = dict(attrs)
        if (tag in _SKIP or attr.get("role") == "navigation" or "headerlink" in (attr.get("class") or "").split()) \
                and tag not in _VOID:
            self.skip = (tag, 1)
            return
        if tag == "br":
            self._break(2)
        elif tag in _HEADINGS:
            self._break(3)
            self.heading = (None, [])
        elif tag in ("td", "th"):
            self._break(1)
        elif tag in _BLOCK:
            self._break(3 if tag not in ("li", "dt", "dd", "tr") else 2)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip is None and tag == "br":
            self._break(2)
        elif self.skip is None and tag in _BLOCK:
            self._break(3)

    def handle_endtag(self, tag: str) -> None:
        if self.skip is not None:
            if tag == self.skip[0]:
                depth = self.skip[1] - 1
                self.skip = None if depth == 0 else (tag, depth)
            return
        if tag == "title":
            self.in_title = False
        elif tag in _HEADINGS and self.heading is not None:
            offset, pieces = self.heading
            title = " ".join("".join(pieces).split())
            if offset is not None and title:
                self.headings.append((offset, title))
            self.heading = None
            self._break(3)
        elif tag in _BLOCK:
            self._break(3 if tag not in ("li", "dt", "dd", "tr") else 2)
        if tag == "pre" and self.pre:
            self.pre -= 1

    def handle_data(self, data: str) -> None:
        if self.skip is not None:
            return
        if self.in_title:
            self.title.append(data)
            return
        if self.heading is not None:
            self.heading[1].append(data)
        if self.pre:
            for n, line in enumerate(data.split("\n")):
                if n:
                    self._break(2)
                if line.strip():
                    self._write(line.rstrip())
            return
        words = data.split()
        if not words:
            if data:
                self._break(1)
            return
        if data[0].isspace():
            self._break(1)
        self._write(" ".join(words))
        if data[-1].isspace():
            self._break(1)


def html_to_text(html: str) -> tuple[str, list[tuple[int, str]]]:
    """Visible text of ``html`` and its headings (offset in that text, title); ``<title>`` counts at 0."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    title = " ".join("".join(parser.title).split())
    headings = [(0, title)] if title else []
    return text, headings + parser.headings


# -- tokens --------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")
_PARAGRAPH_GAP = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def word_spans(text: str) -> list[Span]:
    """Whitespace-separated words."""
    return [m.span() for m in _WORD.finditer(text)]


def tokenizer_spans(tokenizer: Any) -> TokenSpans | None:
    """Token spans from a fast Hugging Face tokenizer's offset mapping; None if it has none."""
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        return None

    def spans(text: str) -> list[Span]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        out = []
        for a, b in enc["offset_mapping"]:
            while a < b and text[a].isspace():
                a += 1
            if a < b:
                out.append((int(a), int(b)))
        return out

    return spans


def _paragraphs(text: str) -> list[Span]:
    starts = [0] + [m.end() for m in _PARAGRAPH_GAP.finditer(text)]
    ends = [m.start() for m in _PARAGRAPH_GAP.finditer(text)] + [len(text)]
    return [(a, b) for a, b in zip(starts, ends, strict=True) if text[a:b].strip()]


def _tokens(doc: Document, spans: TokenSpans) -> tuple[list[Span], list[int]]:
    """Token spans over the whole text and, per token, the strength of a cut just before it
    (3 heading, 2 paragraph, 1 sentence end or line break, 0 none)."""
    tokens: list[Span] = []
    paragraph_starts: list[int] = []
    for a, b in _paragraphs(doc.text):
        paragraph_starts.append(len(tokens))
        tokens.extend((a + s, a + e) for s, e in spans(doc.text[a:b]))
    strength = [0] * len(tokens)
    for i in paragraph_starts:
        if i < len(tokens):
            strength[i] = 2
    heads = [h for h, _ in doc.headings]
    h = 0
    for i in range(1, len(tokens)):
        prev_end, start = tokens[i - 1][1], tokens[i][0]
        while h < len(heads) and heads[h] < prev_end:
            h += 1
        if h < len(heads) and heads[h] <= start:
            strength[i] = 3
            continue
        gap = doc.text[prev_end:start]
        if strength[i] == 0 and gap and ("\n" in gap or doc.text[prev_end - 1] in ".!?"):
            strength[i] = 1
    return tokens, strength


def _cut(s: int, n: int, strength: Sequence[int], cfg: ChunkingConfig) -> int:
    """End (exclusive token index) of the chunk starting at token ``s``."""
    limit = s + cfg.chunk_tokens
    if limit >= n:
        return n
    for level, low in ((3, s + cfg.chunk_tokens // 4), (2, s + cfg.chunk_tokens // 2), (1, s + cfg.chunk_tokens // 2)):
        for e in range(limit, max(low, s + 1) - 1, -1):
            if strength[e] >= level:
                return e
    return limit


def _heading(doc: Document, own_start: int, end: int) -> str:
    before = [title for offset, title in doc.headings if offset <= own_start]
    if before:
        return before[-1]
    inside = [title for offset, title in doc.headings if offset < end]
    return inside[0] if inside else ""


def chunk_document(doc: Document, cfg: ChunkingConfig, spans: TokenSpans | None = None) -> list[Chunk]:
    """Split one document into chunks (see the module docstring for the rule)."""
    tokens, strength = _tokens(doc, spans or word_spans)
    n = len(tokens)
    chunks: list[Chunk] = []
    s, own = 0, 0  # own: first token not shared with the previous chunk
    while s < n:
        e = _cut(s, n, strength, cfg)
        start, end = tokens[s][0], tokens[e - 1][1]
        chunks.append(Chunk(doc.source, len(chunks), start, end, _heading(doc, tokens[own][0], end),
                            doc.text[start:end], e - s))
        if e >= n:
            break
        own = e
        s = e if strength[e] == 3 else max(s + 1, e - cfg.overlap)
    return chunks


def chunk_corpus(corpus: Corpus, cfg: ChunkingConfig, spans: TokenSpans | None = None) -> list[Chunk]:
    """Chunks of every document, in document order; :class:`DataError` when there are none."""
    chunks = [c for doc in corpus.documents for c in chunk_document(doc, cfg, spans)]
    if not chunks:
        raise DataError(f"no text to index in {corpus.folder}")
    return chunks
