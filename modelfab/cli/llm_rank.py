"""``modelfab llm rank ...``: candidates, assignments, export/import of rankings, agreement, DPO pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store
from modelfab.core.errors import DataError
from modelfab.data.result import ImportResult
from modelfab.llm import preference, ranking

app = typer.Typer(help="Preference data: candidates, annotator assignments, rankings, agreement, DPO pairs.",
                  no_args_is_help=True)

_REF = "Ranking dataset: NAME or NAME@version."
_SYNTH = "Also use synthetic (rule) rankings; they stay marked synthetic and are never merged with human ones."


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _result(result: ImportResult, what: str, as_json: bool, **extra: Any) -> None:
    payload = {"dataset": result.ref, "created": result.created, "items": result.items,
               "content_hash": result.version.content_hash, "parent_id": result.version.parent_id,
               "skipped": [{"key": k, "reason": r} for k, r in result.skipped], **extra}
    if as_json:
        print_json(payload)
        return
    for key, reason in result.skipped:
        err_console.print(Text(f"skipped {key}: {reason}", style="yellow"))
    state = "created" if result.created else "unchanged (same content as"
    tail = "" if result.created else ")"
    console.print(f"{state} [bold]{result.ref}[/]{tail}: {result.items} {what}, {len(result.skipped)} skipped")


@app.command("candidates")
def candidates_cmd(
    prompts: str = typer.Argument(..., help="Prompt dataset (chat/SFT or text): NAME or NAME@version."),
    model: str = typer.Option(..., "--model", help="Registered causal LM or chat model that samples candidates."),
    name: str = typer.Option(..., "--name", help="Ranking dataset to write (next version)."),
    n: int = typer.Option(4, "-n", help="Candidates per prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens per candidate at most."),
    temperature: float = typer.Option(0.8, help="Sampling temperature (0: greedy, all candidates equal)."),
    seed: int = typer.Option(0, help="Candidate i is sampled with seed + i."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Sample N candidate answers per prompt into a ranking dataset."""
    result = ranking.candidates(store(), model, prompts, n, name, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed)
    _result(result, f"prompts x {n} candidates", as_json)


@app.command("assign")
def assign_cmd(
    ref: str = typer.Argument(..., help=_REF),
    annotators: str = typer.Option(..., "--annotators", help="Comma-separated annotator names."),
    overlap: int = typer.Option(1, "--overlap", help="Annotators per item (>= 2 to measure agreement)."),
    seed: int = typer.Option(0, help="Seed of the (deterministic) distribution."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Distribute the items among annotators (each item to OVERLAP of them, loads balanced)."""
    names = [a.strip() for a in annotators.split(",") if a.strip()]
    st = store()
    result = ranking.assign(st, ref, names, overlap, seed)
    summary = ranking.ranking_summary(st, result.ref)
    if as_json:
        _result(result, "items", True, overlap=overlap,
                assignments={a: v["items"] for a, v in summary["assignments"].items()})
        return
    _result(result, f"items, each to {overlap} of {len(names)} annotators", False)
    table = Table(title="assignments")
    table.add_column("annotator")
    table.add_column("items", justify="right")
    for a, v in summary["assignments"].items():
        table.add_row(a, str(v["items"]))
    console.print(table)


@app.command("export")
def export_cmd(
    ref: str = typer.Argument(..., help=_REF),
    annotator: str = typer.Option(..., "--annotator", help="Whose tasks (all items when none are assigned)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="JSONL file to write (default: stdout)."),
) -> None:
    """Export an annotator's tasks as JSONL: key, prompt, candidates (in a per-annotator shuffled order).

    Return one line per item: {"key": ..., "ranking": [candidate ids, best first]}.
    """
    count, text = ranking.export_tasks(store(), ref, annotator, output)
    if output is None:
        print(text, end="")
        return
    err_console.print(f"wrote {count} tasks for {annotator} to {output}")


@app.command("import")
def import_cmd(
    ref: str = typer.Argument(..., help=_REF),
    path: Path = typer.Argument(..., help='JSONL: {"key": ..., "ranking": [ids best -> worst]} per line.'),
    annotator: str = typer.Option(..., "--annotator", help="Who ranked."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Import an annotator's rankings as a new version (full orders only: no ties, no missing candidates)."""
    try:
        result = ranking.import_rankings(store(), ref, path, annotator)
    except ranking.RankingFileError as exc:
        if len(exc.errors) == 1:
            raise
        for line in exc.errors:
            err_console.print(Text(line), soft_wrap=True)
        raise DataError(f"{len(exc.errors)} errors in {path}; nothing imported") from None
    _result(result, f"rankings by {annotator}", as_json, annotator=annotator)


@app.command("synthetic")
def synthetic_cmd(
    ref: str = typer.Argument(..., help=_REF),
    rule: str = typer.Option("reference-f1", help=f"Ranking rule: {', '.join(sorted(ranking.RULES))}."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rank candidates by a rule (ranker rule:RULE, marked synthetic); items without a reference are skipped."""
    _result(ranking.synthetic_rankings(store(), ref, rule), f"items ranked by rule:{rule}", as_json,
            ranker=f"rule:{rule}")


@app.command("status")
def status_cmd(ref: str = typer.Argument(..., help=_REF),
               as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Rankers, assignments and progress of a ranking version."""
    info = ranking.ranking_summary(store(), ref)
    if as_json:
        print_json(info)
        return
    console.print(f"[bold]{info['dataset']}[/]: {info['items']} prompts, {info['with_reference']} with a reference, "
                  f"overlap {info['overlap']}")
    table = Table(title="annotators")
    for col in ("ranker", "kind", "assigned", "ranked"):
        table.add_column(col, justify="right" if col in ("assigned", "ranked") else "left")
    for r in sorted(set(info["rankers"]) | set(info["assignments"])):
        kind = info["rankers"].get(r, {}).get("kind", "human")
        assigned = info["assignments"].get(r, {}).get("items")
        table.add_row(r, kind, "-" if assigned is None else str(assigned), str(info["rankers"].get(r, {}).get(
            "ranked", 0)))
    console.print(table)


@app.command("agreement")
def agreement_cmd(
    ref: str = typer.Argument(..., help=_REF),
    include_synthetic: bool = typer.Option(False, "--include-synthetic", help="Compare rule rankers too."),
    worst: int = typer.Option(5, "--worst", help="Items with the lowest agreement to list."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Kendall tau and pairwise agreement per annotator pair (on the items both ranked), and per item."""
    info = ranking.agreement(store(), ref, include_synthetic=include_synthetic)
    if as_json:
        print_json(info)
        return
    table = Table(title=f"agreement on {info['dataset']}")
    for col in ("annotator a", "annotator b", "items", "kendall tau", "pairwise agreement"):
        table.add_column(col, justify="left" if col.startswith("annotator") else "right")
    for p in info["pairs"]:
        table.add_row(p["a"], p["b"], str(p["items"]), _fmt(p["kendall_tau"]), _fmt(p["pairwise"]))
    table.add_row("[bold]mean[/]", "", "", _fmt(info["mean"]["kendall_tau"]), _fmt(info["mean"]["pairwise"]))
    console.print(table)
    scored = sorted((i for i in info["items"] if i["kendall_tau"] is not None), key=lambda i: (i["kendall_tau"],
                                                                                             i["key"]))
    if scored and worst > 0:
        low = Table(title="items with the lowest agreement")
        for col in ("item", "annotators", "kendall tau", "pairwise agreement"):
            low.add_column(col)
        for i in scored[:worst]:
            low.add_row(i["key"], ", ".join(i["annotators"]), _fmt(i["kendall_tau"]), _fmt(i["pairwise"]))
        console.print(low)


@app.command("pairs")
def pairs_cmd(
    ref: str = typer.Argument(..., help=_REF),
    name: str = typer.Option(..., "--name", help="Preference dataset to write (next version)."),
    include_synthetic: bool = typer.Option(False, "--include-synthetic", help=_SYNTH),
    all_pairs: bool = typer.Option(False, "--all-pairs", help="Every ordered pair, not only best vs each other."),
    seed: int = typer.Option(0, help="Seed of the per-prompt split when the rankings have none."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Aggregate rankings (Borda) into (chosen, rejected) pairs: a preference dataset for DPO."""
    report = preference.pairs(store(), ref, name, include_synthetic=include_synthetic, all_pairs=all_pairs, seed=seed)
    if as_json:
        print_json(report.as_dict())
        return
    r = report.result
    state = "created" if r.created else "unchanged (same content as"
    tail = "" if r.created else ")"
    console.print(f"{state} [bold]{r.ref}[/]{tail}: {r.items} pairs")
    table = Table(title="preference pairs")
    for col in ("rankers", "kind", "prompts", "pairs"):
        table.add_column(col)
    for group, rankers in report.groups.items():
        table.add_row(", ".join(rankers), group, str(report.prompts.get(group, 0)), str(report.pairs.get(group, 0)))
    console.print(table)
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in report.splits.items())
                  + f"; {report.identical} identical pairs dropped, {report.unranked} prompts unranked")
