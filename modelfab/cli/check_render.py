"""Rendering of ``modelfab data check``: rich tables and the flagged-items CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.table import Table

from modelfab.cli.common import console
from modelfab.screen.check import DatasetCheck
from modelfab.screen.queue import write_atomic

COLUMNS = ("key", "split", "issue", "given", "suggested", "score", "group")


def write_flagged(result: DatasetCheck, path: Path) -> None:
    """One CSV row per (item, issue)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(result.flagged())
    write_atomic(path, buf.getvalue())


def render_check(result: DatasetCheck, limit: int = 20) -> None:
    """A summary line, then the worst items per issue kind."""
    info = result.to_dict()
    counts = info["counts"]
    console.print(
        f"[bold]{result.dataset}[/] task {result.task or result.field}: {info['items']} items, {info['labeled']} "
        f"labeled; {counts['label']} likely label errors, {counts['outlier']} outliers, "
        f"{counts['exact-duplicate']} exact and {counts['near-duplicate']} near duplicates (items)"
    )
    flagged = info["flagged"]
    for issue, title, score in (
        ("label", "likely label errors (cleanlab, out-of-sample probe)", "label quality"),
        ("outlier", "outliers (kNN on embeddings)", "OOD score"),
    ):
        mine = [f for f in flagged if f["issue"] == issue]
        if not mine:
            continue
        table = Table(title=f"{title}: {len(mine)}" + (f", first {limit}" if len(mine) > limit else ""))
        for col in ("key", "split", "given", "suggested", score):
            table.add_column(col)
        for f in mine[:limit]:
            table.add_row(f["key"], f["split"], f["given"], f["suggested"], f"{f['score']:.3f}")
        console.print(table)
    groups = info["duplicate_groups"]
    if groups:
        table = Table(title=f"duplicate groups: {len(groups)}" + (f", first {limit}" if len(groups) > limit else ""))
        for col in ("kind", "similarity", "keys"):
            table.add_column(col)
        for g in groups[:limit]:
            table.add_row(g["kind"], f"{g['similarity']:.3f}", ", ".join(g["keys"][:6]))
        console.print(table)
    for note in info["notes"]:
        console.print(f"[yellow]note[/] {note}")
