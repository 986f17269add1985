"""``modelfab llm index|ask|qa-eval``: knowledge QA (retrieval-augmented generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from modelfab.cli.common import JSON_HELP, console, print_json, store


def index(
    docs_dir: Path = typer.Argument(..., help="Folder of .md, .txt and .html documents (read recursively)."),
    encoder: str = typer.Option(..., help="A registered text encoder (e.g. minilm-l6 after add-foundation)."),
    name: str = typer.Option(..., help="Name of the index model (its chunks become dataset NAME-docs)."),
    chunk_tokens: int = typer.Option(200, help="Tokens per chunk (encoder tokens; words if it has no tokenizer)."),
    overlap: int = typer.Option(40, help="Tokens shared by consecutive chunks (under half of --chunk-tokens)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on a file that is not UTF-8 instead of skipping it."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Chunk, embed and register a document folder as a retrieval index (L2, task retrieval-index)."""
    from modelfab.llm.rag.index import build_index, index_info

    st = store()
    model = build_index(st, docs_dir, encoder, name, chunk_tokens, overlap, strict=strict)
    _, info = index_info(st, model.id)
    out = {"model": model.id, "name": f"{model.name}:{model.version}", "encoder": info["encoder"],
           "docs": info["docs"], "documents": model.metrics["documents"], "chunks": info["count"], "dim": info["dim"],
           "chunking": info["chunking"], "skipped": info["skipped"], "seconds": model.metrics["seconds"],
           "run": info["run"]}
    if as_json:
        print_json(out)
        return
    t = Table(title=f"index {out['name']} ({model.id})")
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for key in ("encoder", "docs", "documents", "chunks", "dim", "seconds", "run"):
        t.add_row(key, str(out[key]))
    c = info["chunking"]
    t.add_row("chunking", f"{c['chunk_tokens']} {c['unit']}, overlap {c['overlap']}")
    console.print(t)
    for s in info["skipped"]:
        console.print(Text.assemble(("skipped ", "yellow"), f"{s['path']}: {s['reason']}"))


def ask(
    index_ref: str = typer.Argument(..., metavar="INDEX", help="A retrieval index (from `llm index`)."),
    question: str = typer.Argument(..., metavar="QUESTION", help="The question."),
    model: str = typer.Option(..., help="A chat model (L0/L1 causal LM or chat L2)."),
    k: int = typer.Option(4, help="Chunks to retrieve."),
    no_retrieval: bool = typer.Option(False, "--no-retrieval", help="Answer without context (the baseline arm)."),
    max_new_tokens: int = typer.Option(96, help="Tokens to generate at most."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Answer a question from the index's best chunks, citing them by number; then list the passages given."""
    from modelfab.llm.rag.answer import ask as ask_question

    ans = ask_question(store(), index_ref, model, question, k, max_new_tokens, retrieval=not no_retrieval)
    if as_json:
        print_json(ans.to_dict())
        return
    console.print(Text(ans.text) if ans.text else Text("(empty answer)", style="dim"))
    if not ans.citations:
        console.print(f"[dim]{'no retrieval' if no_retrieval else 'no passages fitted the context'}; "
                      f"{ans.prompt_tokens} prompt + {ans.completion_tokens} answer tokens[/]")
        return
    t = Table(title=f"passages given ({ans.dropped} dropped to fit the context)" if ans.dropped else "passages given")
    for col in ("n", "cited", "source", "heading", "score"):
        t.add_column(col, overflow="fold")
    for n, hit in enumerate(ans.citations, 1):
        t.add_row(f"[{n}]", "yes" if n in ans.cited else "", Text(hit.source), Text(hit.heading), f"{hit.score:.3f}")
    console.print(t)


def qa_eval(
    index_ref: str = typer.Argument(..., metavar="INDEX", help="A retrieval index (from `llm index`)."),
    model: str = typer.Option(..., help="A chat model (L0/L1 causal LM or chat L2)."),
    qa: Path = typer.Option(..., help="QA JSONL: id, question, answer, source, passage, facts."),
    k: int = typer.Option(4, help="Chunks to retrieve per question."),
    no_retrieval: bool = typer.Option(False, "--no-retrieval", help="Answer without context (the baseline arm)."),
    limit: int | None = typer.Option(None, help="Only the first N questions."),
    max_new_tokens: int = typer.Option(96, help="Tokens to generate at most per answer."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Retrieval recall@1/@k and answer F1 / key facts / accuracy on a QA file (scoring rule in the report)."""
    from modelfab.llm.rag.qa_eval import evaluate_qa

    report = evaluate_qa(store(), index_ref, model, qa, k, retrieval=not no_retrieval, limit=limit,
                         max_new_tokens=max_new_tokens)
    if as_json:
        print_json(report)
        return
    t = Table(title=f"QA {report['qa']}: {report['model']} "
                    f"{'with index ' + report['index'] if report['retrieval'] else 'without retrieval'}")
    for col in ("id", "rank", "f1", "facts", "correct", "answer"):
        t.add_column(col, overflow="fold")
    for row in report["rows"]:
        rank = "-" if row["rank"] is None else str(row["rank"])
        t.add_row(Text(row["id"]), rank, f"{row['f1']:.2f}", f"{row['facts']:.2f}", "yes" if row["correct"] else "",
                  Text(row["answer"][:80]))
    console.print(t)
    s = Table(title="summary")
    s.add_column("metric")
    s.add_column("value")
    for key in ("items", "recall@1", "recall@k", "f1", "fact_score", "accuracy", "seconds", "run"):
        value: Any = report[key]
        s.add_row(key.replace("@k", f"@{report['k']}"), "-" if value is None else str(value))
    console.print(s)
    console.print(f"[dim]rule: {report['rule']}[/]")


def register(app: typer.Typer) -> None:
    """Add ``index``, ``ask`` and ``qa-eval`` to the ``llm`` app."""
    app.command("index")(index)
    app.command("ask")(ask)
    app.command("qa-eval")(qa_eval)
