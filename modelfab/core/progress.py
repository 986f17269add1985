"""Progress reporting: a rich bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")
_stderr = Console(stderr=True)


def track(items: Iterable[T], total: int, description: str, *, plain_every_s: float = 5.0) -> Iterator[T]:
    """Iterate ``items`` showing progress on stderr.

    On a terminal this is a rich progress bar; in logs (CI, pipes) it prints
    ``<description>: n/total`` at most every ``plain_every_s`` seconds, and at the end.
    """
    if _stderr.is_terminal:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=_stderr,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        return
    last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= plain_every_s:
            print(f"{description}: {done}/{total}", file=sys.stderr, flush=True)
            last = now
    print(f"{description}: {done}/{total}", file=sys.stderr, flush=True)
