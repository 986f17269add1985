"""Validate the hand-written Brookhaven policy data under bench/data/.

Checks (stdlib only), printing a summary and exiting 1 on any problem:

- policy-docs/: 14-18 documents (.md, .txt, .html; at least one .txt and one .html), each 250-600 words,
  every document named in README.md (beside policy-docs/, so indexing the folder indexes only documents).
- policy-qa.jsonl: at least 55 questions with unique ids and the keys id, question, answer, source, passage,
  facts; every document is the source of at least one question; the passage is found in its source; every fact
  (1-3 per question) occurs in its passage, case-insensitively.
- policy-sft.csv (60-80 rows: id, topic, question, answer), general-qa.csv (40 rows: id, question, answer),
  policy-prompts.csv (30 rows: id, question, reference): unique ids, no empty cells.
- No QA question appears verbatim in policy-sft.csv or policy-prompts.csv, and no prompt repeats an SFT question.
- policy-template.yaml has top-level keys system, user and assistant.

Passage rule: for .md and .txt the passage must be an exact substring of the raw file. For .html the tags are
stripped with html.parser (text inside <head>, <script> and <style> is dropped; block-level tags become a space),
and then BOTH the page text and the passage are normalised by collapsing every run of whitespace to one space
(" ".join(text.split())) before the substring test.

Word counts: whitespace-separated tokens that contain at least one letter or digit (so Markdown table rules and
bare "|" or "-" do not count); for .html the tag-stripped text is counted.

"Verbatim" for the overlap checks means equal after case-folding and whitespace collapsing.

Usage: python bench/data/check_policy_data.py [DATA_DIR]
"""

from __future__ import annotations

import csv
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

DOC_SUFFIXES = (".md", ".txt", ".html")
MIN_DOCS, MAX_DOCS = 14, 18
MIN_WORDS, MAX_WORDS = 250, 600
MIN_QA = 55
SFT_ROWS = (60, 80)
GENERAL_ROWS = (40, 40)
PROMPT_ROWS = (30, 30)
QA_KEYS = ("id", "question", "answer", "source", "passage", "facts")
BLOCK_TAGS = frozenset({"p", "li", "ul", "ol", "div", "br", "tr", "td", "th", "table", "body", "html", "pre", "hr"}) | (
    frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "dl", "dt", "dd", "blockquote"})
)
SKIP_TAGS = {"head", "script", "style"}
WORD = re.compile(r"[A-Za-z0-9]")


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML page; block-level tags become a space."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIP_TAGS:
            self._skip += 1
        elif tag in BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def normalise(text: str) -> str:
    """Collapse every run of whitespace to a single space and strip the ends."""
    return " ".join(text.split())


def html_text(raw: str) -> str:
    """Visible text of an HTML page, whitespace-normalised."""
    parser = _TextExtractor()
    parser.feed(raw)
    parser.close()
    return normalise("".join(parser.parts))


def doc_text(path: Path) -> str:
    """Text the passage test runs against: raw for .md/.txt, stripped and normalised for .html."""
    raw = path.read_text(encoding="utf-8")
    return html_text(raw) if path.suffix == ".html" else raw


def word_count(text: str) -> int:
    """Whitespace-separated tokens that contain a letter or digit."""
    return sum(1 for token in text.split() if WORD.search(token))


def key(question: str) -> str:
    """Comparison key for the verbatim-overlap checks."""
    return normalise(question).casefold()


def read_table(
    path: Path, columns: tuple[str, ...], rows: tuple[int, int], problems: list[str]
) -> list[dict[str, str]]:
    """Read a CSV, checking its header, row count, unique ids and non-empty cells."""
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = tuple(reader.fieldnames or ())
        records = list(reader)
    if header != columns:
        problems.append(f"{path.name}: header {list(header)}, expected {list(columns)}")
        return records
    lo, hi = rows
    if not lo <= len(records) <= hi:
        problems.append(f"{path.name}: {len(records)} rows, expected {lo}-{hi}")
    seen: set[str] = set()
    for n, record in enumerate(records, start=2):
        if None in record or any(value is None for value in record.values()):
            problems.append(f"{path.name}:{n}: wrong number of cells")
            continue
        empty = [column for column in columns if not record[column].strip()]
        if empty:
            problems.append(f"{path.name}:{n}: empty {', '.join(empty)}")
        if record["id"] in seen:
            problems.append(f"{path.name}:{n}: duplicate id {record['id']}")
        seen.add(record["id"])
    return records


def check_docs(docs_dir: Path, problems: list[str]) -> dict[str, str]:
    """Check the document collection; return file name -> text used for the passage test."""
    if not docs_dir.is_dir():
        problems.append(f"{docs_dir}: missing")
        return {}
    paths = sorted(p for p in docs_dir.iterdir() if p.is_file() and p.suffix in DOC_SUFFIXES and p.name != "README.md")
    if not MIN_DOCS <= len(paths) <= MAX_DOCS:
        problems.append(f"policy-docs: {len(paths)} documents, expected {MIN_DOCS}-{MAX_DOCS}")
    for suffix in (".txt", ".html"):
        if not any(p.suffix == suffix for p in paths):
            problems.append(f"policy-docs: no {suffix} document")
    readme = docs_dir.parent / "README.md"
    readme_text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not readme_text:
        problems.append("README.md: missing or empty")
    texts: dict[str, str] = {}
    for path in paths:
        text = doc_text(path)
        texts[path.name] = text
        words = word_count(text)
        if not MIN_WORDS <= words <= MAX_WORDS:
            problems.append(f"policy-docs/{path.name}: {words} words, expected {MIN_WORDS}-{MAX_WORDS}")
        if readme_text and path.name not in readme_text:
            problems.append(f"README.md: does not list {path.name}")
    return texts


def check_qa(path: Path, docs: dict[str, str], problems: list[str]) -> list[dict[str, Any]]:
    """Check the QA set against the documents."""
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return []
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not JSON ({exc.msg})")
            continue
        if not isinstance(record, dict) or tuple(record) != QA_KEYS:
            problems.append(f"{where}: expected keys {list(QA_KEYS)}")
            continue
        records.append(record)
        qid = record["id"]
        if qid in seen:
            problems.append(f"{where}: duplicate id {qid}")
        seen.add(qid)
        for field in ("id", "question", "answer", "source", "passage"):
            if not isinstance(record[field], str) or not record[field].strip():
                problems.append(f"{where}: {field} must be a non-empty string")
        facts = record["facts"]
        if not isinstance(facts, list) or not 1 <= len(facts) <= 3 or not all(isinstance(f, str) and f for f in facts):
            problems.append(f"{where}: facts must be a list of 1-3 non-empty strings")
            facts = []
        passage = record["passage"] if isinstance(record["passage"], str) else ""
        source = record["source"]
        if source not in docs:
            problems.append(f"{where}: unknown source {source!r}")
        else:
            text = docs[source]
            found = normalise(passage) in text if source.endswith(".html") else passage in text
            if not found:
                problems.append(f"{where}: passage is not a substring of {source}")
        for fact in facts:
            if fact.casefold() not in passage.casefold():
                problems.append(f"{where}: fact {fact!r} not in passage")
    if len(records) < MIN_QA:
        problems.append(f"{path.name}: {len(records)} questions, expected at least {MIN_QA}")
    uncovered = sorted(set(docs) - {r["source"] for r in records})
    if uncovered:
        problems.append(f"{path.name}: no question for {', '.join(uncovered)}")
    return records


def check_template(path: Path, problems: list[str]) -> None:
    """Check that the YAML template has the three top-level keys (line-based; no YAML parser needed)."""
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return
    keys = {line.split(":", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if re.match(r"^\w+:", line)}
    missing = [k for k in ("system", "user", "assistant") if k not in keys]
    if missing:
        problems.append(f"{path.name}: missing keys {', '.join(missing)}")


def main(argv: list[str]) -> int:
    """Run all checks and print a summary; return the exit code."""
    data = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    problems: list[str] = []
    docs = check_docs(data / "policy-docs", problems)
    qa = check_qa(data / "policy-qa.jsonl", docs, problems)
    sft = read_table(data / "policy-sft.csv", ("id", "topic", "question", "answer"), SFT_ROWS, problems)
    general = read_table(data / "general-qa.csv", ("id", "question", "answer"), GENERAL_ROWS, problems)
    prompts = read_table(data / "policy-prompts.csv", ("id", "question", "reference"), PROMPT_ROWS, problems)
    check_template(data / "policy-template.yaml", problems)

    sft_questions = {key(r["question"]) for r in sft if r.get("question")}
    prompt_questions = {key(r["question"]) for r in prompts if r.get("question")}
    for record in qa:
        if not isinstance(record["question"], str):
            continue
        if key(record["question"]) in sft_questions:
            problems.append(f"policy-qa.jsonl {record['id']}: question repeated in policy-sft.csv")
        if key(record["question"]) in prompt_questions:
            problems.append(f"policy-qa.jsonl {record['id']}: question repeated in policy-prompts.csv")
    for question in sorted(prompt_questions & sft_questions):
        problems.append(f"policy-prompts.csv: question also in policy-sft.csv: {question!r}")

    words = {name: word_count(text) for name, text in docs.items()}
    two_fact = sum(1 for r in qa if isinstance(r["facts"], list) and len(r["facts"]) > 1)
    print(
        f"documents: {len(docs)} ({sum(words.values())} words, {min(words.values(), default=0)}-"
        f"{max(words.values(), default=0)} per document)"
    )
    for name in sorted(words):
        print(f"  {name}: {words[name]} words, {sum(1 for r in qa if r['source'] == name)} questions")
    print(f"policy-qa.jsonl: {len(qa)} questions ({two_fact} with two or more facts)")
    print(
        f"policy-sft.csv: {len(sft)} rows; general-qa.csv: {len(general)} rows; policy-prompts.csv: {len(prompts)} rows"
    )
    if problems:
        print(f"{len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
