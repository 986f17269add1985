"""Label export and import (CSV and Label Studio JSON). Importing labels makes a new version."""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from modelfab.core.errors import DataError
from modelfab.data.result import ImportResult
from modelfab.store.datasets import ItemRow, create_version, spec_from_version, version_items
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.store import Store

FORMATS = ("csv", "label-studio")


def export_labels(store: Store, ref: str, fmt: str = "csv", *, field: str = "label") -> str:
    """A version's visible labels as CSV (key, split, fields...) or Label Studio tasks JSON."""
    return format_labels(version_items(store, ref), fmt, field=field)


def format_labels(
    rows: Sequence[ItemRow], fmt: str = "csv", *, field: str = "label", columns: Sequence[str] = ()
) -> str:
    """``rows`` as CSV (key, split, label fields + ``columns``, to fill in) or Label Studio tasks JSON."""
    if fmt == "csv":
        fields = sorted({f for r in rows for f in r.labels} | set(columns))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["key", "split", *fields])
        for r in rows:
            w.writerow([r.key, r.split or "", *[_cell(r.labels.get(f)) for f in fields]])
        return buf.getvalue()
    if fmt == "label-studio":
        tasks = []
        for n, r in enumerate(rows, 1):
            data: dict[str, Any] = {"item": r.key}
            if r.text is not None:
                data["text"] = r.text
            else:
                data["image"] = f"/data/local-files/?d={r.key}"
            task: dict[str, Any] = {"id": n, "data": data}
            if field in r.labels:
                task["annotations"] = [
                    {
                        "result": [
                            {
                                "from_name": field,
                                "to_name": "text" if r.text is not None else "image",
                                "type": "choices",
                                "value": {"choices": [str(r.labels[field])]},
                            }
                        ]
                    }
                ]
            tasks.append(task)
        return json.dumps(tasks, indent=1)
    raise DataError(f"unknown label format {fmt!r}; use {', '.join(FORMATS)}")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def safe_key(raw: str) -> str:
    """Normalise an item path from a label file; reject anything escaping the dataset root."""
    text = raw.strip()
    if text.startswith(("/data/local-files/", "/data/upload/")) or "?d=" in text:
        query = parse_qs(urlparse(text).query)
        text = query.get("d", [text.split("/data/upload/", 1)[-1]])[0]
    text = unquote(text).replace("\\", "/")
    if not text or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise DataError(f"label path {raw!r} is absolute; paths must be relative to the dataset root")
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise DataError(f"label path {raw!r} escapes the dataset root")
    return norm


def _parse_value(text: str, numeric: bool) -> Any:
    if numeric:
        try:
            return float(text)
        except ValueError:
            raise DataError(f"label value {text!r} is not a number") from None
    return text


def read_label_file(path: Path, fmt: str | None = None, *, field: str = "label") -> dict[str, dict[str, str]]:
    """key -> {field: raw value} from a CSV (key column + fields) or Label Studio JSON export."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = fmt or ("label-studio" if path.suffix.lower() == ".json" else "csv")
    out: dict[str, dict[str, str]] = {}
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "key" not in reader.fieldnames:
                raise DataError(f"{path}: needs a 'key' column; got {reader.fieldnames}")
            for row in reader:
                key = safe_key(row["key"])
                out[key] = {k: v for k, v in row.items() if k not in ("key", "split") and v not in (None, "")}
        return out
    if fmt == "label-studio":
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
        if not isinstance(tasks, list):
            raise DataError(f"{path}: expected a list of Label Studio tasks")
        for n, task in enumerate(tasks):
            data = task.get("data", {}) if isinstance(task, dict) else {}
            raw = data.get("item") or data.get("image") or data.get("text_path")
            if not isinstance(raw, str):
                raise DataError(f"{path}: task {n} has no data.item or data.image")
            key = safe_key(raw)
            for ann in task.get("annotations") or []:
                for res in ann.get("result") or []:
                    choices = (res.get("value") or {}).get("choices") or []
                    if choices:
                        out.setdefault(key, {})[res.get("from_name") or field] = str(choices[0])
        return out
    raise DataError(f"unknown label format {fmt!r}; use {', '.join(FORMATS)}")


def import_labels(store: Store, ref: str, path: Path, fmt: str | None = None, *, message: str = "") -> ImportResult:
    """Apply the labels in ``path`` to version ``ref``; the result is a new version (parent = ref).

    Every key must name an item of the version; nothing is written otherwise.
    """
    base, spec = spec_from_version(store, ref)
    incoming = read_label_file(path, fmt)
    if not incoming:
        raise DataError(f"{path}: no labels found")
    known = {i.key for i in spec.items}
    missing = sorted(k for k in incoming if k not in known)
    if missing:
        raise DataError(f"{path}: {len(missing)} labels name missing items, e.g. {', '.join(missing[:3])}")
    numeric = {
        f
        for f in {f for v in incoming.values() for f in v}
        if any(isinstance(lab.get(f), int | float) for lab in [*spec.labels.values(), *spec.hidden.values()])
    }
    labels = {k: dict(v) for k, v in spec.labels.items()}
    for key, fields in incoming.items():
        for f, raw in fields.items():
            labels.setdefault(key, {})[f] = _parse_value(raw, f in numeric)
    spec.labels = labels
    spec.message = message or f"labels from {path.name}"
    name = base.dataset.name
    with tracked_run(store, "import-labels", config={"source": str(path), "base": f"{name}@{base.version}"}) as run:
        dv, created = create_version(store, name, base.dataset.modality, spec, parent=base.id)
    finish_run(
        store,
        run.id,
        outputs={"dataset": f"{name}@{dv.version}", "created": created},
        metrics={"labels": sum(len(v) for v in incoming.values())},
    )
    return ImportResult(name, dv, created, len(spec.items))
