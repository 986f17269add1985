"""Console routes for datasets: versions, label distribution, diffs, items (gallery), thumbnails, heat-maps,
and saving labels as a new version (through :func:`modelfab.data.labels_io.import_labels`)."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from modelfab.console.context import Caller, Ctx, require, who
from modelfab.core.errors import DataError, NotFoundError
from modelfab.store.datasets import ItemRow, get_version, list_datasets, list_versions, version_items
from modelfab.store.runs import list_runs
from modelfab.store.schema import Dataset, DatasetVersion, Item, utcnow
from modelfab.store.store import Store

router = APIRouter()
SCORE, RANK = "screen_score", "screen_rank"  # written by modelfab.screen.api on the version to label
FIELD_RE = r"^[A-Za-z0-9_.-]{1,100}$"


def _ref(dv: DatasetVersion) -> str:
    return f"{dv.dataset.name}@{dv.version}"


@router.get("/datasets")
def datasets(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """Every dataset with its newest version."""
    out = []
    for ds, latest in list_datasets(ctx.store):
        out.append({"name": ds.name, "modality": ds.modality, "description": ds.description,
                    "latest": latest.version if latest else None, "items": latest.item_count if latest else 0,
                    "created_at": ds.created_at.isoformat()})
    return {"datasets": out}


def _parent_ref(store: Store, parent_id: int | None) -> str | None:
    return _ref(get_version(store, parent_id)) if parent_id is not None else None


@router.get("/datasets/{name}/versions")
def versions(name: str, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """The versions of a dataset with their parents and messages."""
    st = ctx.store
    rows = list_versions(st, name)
    return {"dataset": name, "versions": [
        {"version": v.version, "ref": f"{name}@{v.version}", "parent": _parent_ref(st, v.parent_id),
         "message": v.message, "items": v.item_count, "created_at": v.created_at.isoformat()} for v in rows]}


def distribution(rows: list[ItemRow]) -> dict[str, dict[str, Any]]:
    """Per visible label field: counts of categorical values, or min/max of numeric ones, and how many lack it."""
    out: dict[str, dict[str, Any]] = {}
    fields = sorted({f for r in rows for f in r.labels})
    for f in fields:
        values = [r.labels[f] for r in rows if f in r.labels]
        missing = len(rows) - len(values)
        if values and all(isinstance(v, float) for v in values):
            out[f] = {"kind": "numeric", "min": min(values), "max": max(values), "count": len(values),
                      "missing": missing}
        else:
            counts = Counter(str(v) for v in values)
            out[f] = {"kind": "categorical", "counts": dict(counts.most_common()), "missing": missing}
    return out


def diff(parent: list[ItemRow], child: list[ItemRow], limit: int = 100) -> dict[str, Any]:
    """Items added, removed, replaced (same key, new content) and relabelled between two versions."""
    before, after = {r.key: r for r in parent}, {r.key: r for r in child}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    both = sorted(set(after) & set(before))
    replaced = [k for k in both if after[k].content_hash != before[k].content_hash]
    relabelled = [{"key": k, "before": before[k].labels, "after": after[k].labels}
                  for k in both if after[k].labels != before[k].labels or after[k].split != before[k].split]
    return {"counts": {"added": len(added), "removed": len(removed), "replaced": len(replaced),
                       "relabelled": len(relabelled)},
            "added": added[:limit], "removed": removed[:limit], "replaced": replaced[:limit],
            "relabelled": relabelled[:limit]}


@router.get("/datasets/{name}/versions/{version}")
def version_detail(name: str, version: int, ctx: Ctx, _: Caller) -> dict[str, Any]:
    """A version: parent, message, splits, tasks, label distribution and the diff against its parent."""
    st = ctx.store
    dv = get_version(st, f"{name}@{version}")
    rows = version_items(st, dv.id)
    parent = _parent_ref(st, dv.parent_id)
    return {
        "ref": _ref(dv), "dataset": name, "version": dv.version, "modality": dv.dataset.modality,
        "message": dv.message, "parent": parent, "items": len(rows), "created_at": dv.created_at.isoformat(),
        "splits": dict(Counter(r.split or "(none)" for r in rows)), "tasks": dv.tasks, "label_schema": dv.label_schema,
        "distribution": distribution(rows), "scored": any(SCORE in r.labels for r in rows),
        "diff": diff(version_items(st, dv.parent_id), rows) if dv.parent_id is not None else None,
    }


def heatmaps(store: Store, ref: str) -> dict[int, Path]:
    """screen rank -> heat-map PNG, from the screen runs that wrote version ``ref``."""
    out: dict[int, Path] = {}
    for run in list_runs(store, "screen", limit=500):
        if (run.outputs or {}).get("version") != ref:
            continue
        for p in (run.outputs or {}).get("heatmaps") or []:
            path = Path(p)
            head = path.name.split("_", 1)[0]
            if head.isdigit() and path.suffix == ".png":
                out.setdefault(int(head), path)
    return out


def _item(r: ItemRow, modality: str, maps: dict[int, Path]) -> dict[str, Any]:
    rank = r.labels.get(RANK)
    return {"key": r.key, "split": r.split, "labels": r.labels, "text": r.text,
            "image": r.content_hash if modality == "image" else None, "width": r.width, "height": r.height,
            "score": r.labels.get(SCORE), "rank": rank,
            "heatmap": isinstance(rank, int) and rank in maps and maps[rank].is_file()}


@router.get("/datasets/{name}/versions/{version}/items")
def items(name: str, version: int, ctx: Ctx, _: Caller, offset: int = Query(0, ge=0),
          limit: int = Query(60, ge=1, le=1000), unlabeled: str | None = Query(None, pattern=FIELD_RE),
          split: str | None = None) -> dict[str, Any]:
    """Items of a version, highest screening score first when the version was screened, else by key.

    ``unlabeled=FIELD`` keeps only items without a visible ``FIELD`` label (the labeling queue).
    """
    st = ctx.store
    dv = get_version(st, f"{name}@{version}")
    rows = version_items(st, dv.id)
    if split:
        rows = [r for r in rows if r.split == split]
    if unlabeled:
        rows = [r for r in rows if unlabeled not in r.labels]
    scored = any(isinstance(r.labels.get(SCORE), int | float) for r in rows)
    if scored:
        rows.sort(key=lambda r: -float(r.labels.get(SCORE, float("-inf"))))
    maps = heatmaps(st, _ref(dv)) if scored else {}
    page = rows[offset : offset + limit]
    return {"ref": _ref(dv), "modality": dv.dataset.modality, "total": len(rows), "offset": offset,
            "order": "screen score (highest first)" if scored else "key",
            "items": [_item(r, dv.dataset.modality, maps) for r in page]}


def _is_image_item(store: Store, digest: str) -> bool:
    with store.session() as s:
        return s.scalar(select(Item.id).join(Dataset, Dataset.id == Item.dataset_id)
                        .where(Item.content_hash == digest, Dataset.modality == "image").limit(1)) is not None


@router.get("/thumbs/{digest}", response_class=Response)
def thumbnail(digest: str, ctx: Ctx, _: Caller, size: int = Query(192, ge=16, le=1024)) -> Response:
    """A PNG thumbnail (longest side ``size``) of an image item; only item images are served."""
    from PIL import Image

    from modelfab.data.images import load_rgb

    st = ctx.store
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or not _is_image_item(st, digest):
        raise NotFoundError(f"no image item with digest {digest[:16]!r}")
    img = Image.fromarray(load_rgb(st.artifacts.local_path(digest)))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/datasets/{name}/versions/{version}/heatmaps/{rank}", response_class=FileResponse)
def heatmap(name: str, version: int, rank: int, ctx: Ctx, _: Caller) -> FileResponse:
    """The screening heat-map PNG of the item with ``screen_rank`` = ``rank`` (paths come from the run record)."""
    st = ctx.store
    path = heatmaps(st, _ref(get_version(st, f"{name}@{version}"))).get(rank)
    if path is None or not path.is_file():
        raise NotFoundError(f"no heat-map for rank {rank} of {name}@{version}")
    return FileResponse(path, media_type="image/png")


class LabelsBody(BaseModel):
    field: str = Field("label", pattern=FIELD_RE)
    labels: dict[str, str] = Field(..., min_length=1, max_length=100_000)
    message: str = Field("", max_length=500)


@router.post("/datasets/{name}/versions/{version}/labels")
def save_labels(name: str, version: int, body: LabelsBody, ctx: Ctx, principal: Caller) -> dict[str, Any]:
    """Save labels (key -> class) as a NEW version whose parent is this one (annotator or above).

    The labels are written to a CSV under ``MODELFAB_HOME/console/labels`` (kept as the record of
    what was submitted) and applied by :func:`modelfab.data.labels_io.import_labels`.
    """
    from modelfab.data.labels_io import import_labels

    require(principal, "annotator", "save labels")
    bad = [v for v in body.labels.values() if not v.strip() or len(v) > 200]
    if bad:
        raise DataError(f"labels: {len(bad)} empty or over-long values, e.g. {bad[0][:40]!r}")
    st = ctx.store
    dv = get_version(st, f"{name}@{version}")
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    path = st.settings.home / "console" / "labels" / f"{name}-v{dv.version}-{stamp}-{principal.key_id}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["key", body.field])
        for key, value in body.labels.items():
            writer.writerow([key, value.strip()])
    message = body.message.strip() or f"{len(body.labels)} labels ({body.field}) from the console by {who(principal)}"
    result = import_labels(st, f"{name}@{dv.version}", path, "csv", message=message)
    return {"dataset": f"{result.dataset}@{result.version.version}", "created": result.created,
            "labels": len(body.labels), "parent": f"{name}@{dv.version}", "file": path.name}
