"""Import image folders and text tables as new dataset versions."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelfab.core.errors import DataError
from modelfab.core.progress import track
from modelfab.data.images import ImageInfo, inspect_image
from modelfab.data.result import ImportResult
from modelfab.data.splits import OFFICIAL_RATIOS, split_hash, stratified_split
from modelfab.data.tasks import TaskView
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.store import Store


def _scan(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(f"{root}: no files to import")
    return files


def _split_and_info(
    strata: Mapping[str, Any], seed: int, stratified_by: list[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    splits = stratified_split(strata, OFFICIAL_RATIOS, seed)
    info = {"seed": seed, "ratios": OFFICIAL_RATIOS, "stratify": stratified_by, "hash": split_hash(splits)}
    return splits, info


def import_image_folder(
    store: Store,
    root: Path,
    name: str,
    *,
    unlabeled: bool = False,
    strict: bool = False,
    seed: int = 0,
    label_fields: Mapping[str, Mapping[str, Any]] | None = None,
    tasks: Mapping[str, Any] | None = None,
    strata: Mapping[str, Any] | None = None,
    stratify_names: list[str] | None = None,
    message: str | None = None,
    include: set[str] | None = None,
) -> ImportResult:
    """Import every image under ``root`` (or only the keys in ``include``) as the next version of ``name``.

    Class subfolders give a ``label`` field (all files must then sit in subfolders). Unreadable
    files are reported and skipped, or fail the whole import with ``strict``. Images are decoded in
    full before anything is written; the version's rows are written in one transaction.
    ``label_fields`` (key -> fields) and ``tasks`` let callers (e.g. the ELPV importer) supply labels.
    With ``unlabeled`` every label goes to the hidden ground-truth fields.
    """
    root = root.resolve()
    files = _scan(root)
    if include is not None:
        files = [p for p in files if p.relative_to(root).as_posix() in include]
        if not files:
            raise DataError(f"{root}: none of the {len(include)} requested files exist")
    keys = [p.relative_to(root).as_posix() for p in files]
    in_folders = all("/" in k for k in keys)
    labels: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (label_fields or {}).items()}
    if label_fields is None:
        if in_folders:
            labels = {k: {"label": k.split("/", 1)[0]} for k in keys}
        elif any("/" in k for k in keys) and not unlabeled:
            raise DataError(f"{root}: mixes class subfolders and loose files; use --unlabeled or sort them")
    config = {"source": str(root), "name": name, "unlabeled": unlabeled, "strict": strict}
    with tracked_run(store, "import", config=config) as run:
        infos: dict[str, tuple[Path, ImageInfo]] = {}
        skipped: list[tuple[str, str]] = []
        for key, path in track(zip(keys, files, strict=True), len(files), f"checking {name}"):
            try:
                infos[key] = (path, inspect_image(path))
            except DataError as exc:
                skipped.append((key, str(exc).split(": ", 1)[-1]))
        if skipped and strict:
            raise DataError(f"{len(skipped)} unusable files, e.g. {skipped[0][0]}: {skipped[0][1]} (--strict)")
        if not infos:
            raise DataError(f"{root}: no usable images ({len(skipped)} skipped)")
        items = []
        for key, (path, img) in track(infos.items(), len(infos), f"storing {name}"):
            digest = store.artifacts.put_file(path)
            items.append(ItemSpec(key, digest, width=img.width, height=img.height, mode=img.mode))
        labels = {k: v for k, v in labels.items() if k in infos}
        if tasks is None and labels and label_fields is None:
            classes = sorted({v["label"] for v in labels.values()})
            tasks = {
                "label": TaskView(
                    classes=classes, type="binary" if len(classes) == 2 else "classification"
                ).model_dump()
            }
        if strata is None:
            strata = {k: (None if unlabeled else labels.get(k, {}).get("label")) for k in infos}
            stratify_names = [] if unlabeled else ["label"]
        splits, info = _split_and_info({k: strata[k] for k in infos}, seed, stratify_names or [])
        spec = VersionSpec(
            items=items,
            labels={} if unlabeled else labels,
            hidden=labels if unlabeled else {},
            splits=splits,
            tasks=dict(tasks or {}),
            split_info=info,
            message=(message or f"import {root.name}") + (" (unlabeled)" if unlabeled else ""),
        )
        dv, created = create_version(store, name, "image", spec)
    finish_run(
        store,
        run.id,
        outputs={"dataset": f"{name}@{dv.version}", "created": created},
        metrics={"items": len(items), "skipped": len(skipped)},
    )
    return ImportResult(name, dv, created, len(items), skipped)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{n}: expected a JSON object per line")
                    rows.append(row)
            return rows
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    raise DataError(f"{path}: unsupported table format {suffix!r}; use .csv or .jsonl")


def import_text_table(
    store: Store,
    path: Path,
    name: str,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    id_column: str | None = None,
    unlabeled: bool = False,
    strict: bool = False,
    seed: int = 0,
) -> ImportResult:
    """Import a CSV/JSONL table of texts (with an optional label column) as a new version."""
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    columns = set(rows[0])
    if label_column is None and "label" in columns:
        label_column = "label"  # picked up when present; required only when named explicitly
    for col in (text_column, id_column, label_column):
        if col and col not in columns:
            raise DataError(f"{path}: no column {col!r}; columns: {', '.join(sorted(columns))}")
    items: list[ItemSpec] = []
    labels: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[str, str]] = []
    for n, row in enumerate(rows, 1):
        key = str(row[id_column]) if id_column else f"row-{n:07d}"
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            skipped.append((key, "empty text"))
            continue
        meta = {k: v for k, v in row.items() if k not in (text_column, label_column, id_column)}
        items.append(ItemSpec(key, hashlib.sha256(text.encode()).hexdigest(), text=text, meta=meta))
        if label_column and row.get(label_column) not in (None, ""):
            labels[key] = {"label": str(row[label_column])}
    if skipped and strict:
        raise DataError(f"{path}: {len(skipped)} unusable rows, e.g. {skipped[0][0]}: {skipped[0][1]} (--strict)")
    if not items:
        raise DataError(f"{path}: no usable rows")
    tasks = {}
    if labels:
        classes = sorted({v["label"] for v in labels.values()})
        tasks["label"] = TaskView(
            classes=classes, type="binary" if len(classes) == 2 else "classification"
        ).model_dump()
    strata = {i.key: (None if unlabeled else labels.get(i.key, {}).get("label")) for i in items}
    splits, info = _split_and_info(strata, seed, [] if unlabeled else ["label"])
    spec = VersionSpec(
        items=items,
        labels={} if unlabeled else labels,
        hidden=labels if unlabeled else {},
        splits=splits,
        tasks=tasks,
        split_info=info,
        message=f"import {path.name}",
    )
    with tracked_run(store, "import", config={"source": str(path), "name": name, "unlabeled": unlabeled}) as run:
        dv, created = create_version(store, name, "text", spec)
    finish_run(store, run.id, outputs={"dataset": f"{name}@{dv.version}"}, metrics={"items": len(items)})
    return ImportResult(name, dv, created, len(items), skipped)
