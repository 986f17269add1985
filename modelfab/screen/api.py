"""``fit_screen`` and ``run_screen``: the store-aware verbs behind ``modelfab screen``."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfab.core.errors import DataError
from modelfab.screen.calibrate import Calibration, calibrate_threshold, defects_needed
from modelfab.screen.heatmap import save_heatmap
from modelfab.screen.labels import defect_split, in_split, normal_rows, parse_split, positive_class
from modelfab.screen.storage import load_screener, load_vision_backbone, make_screener, register_screener
from modelfab.store.datasets import ItemRow, VersionSpec, create_version, spec_from_version
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.schema import DatasetVersion, Model
from modelfab.store.store import Store


def row_loader(store: Store) -> Any:
    """ItemRow -> uint8 RGB array (grayscale repeated, alpha dropped)."""
    from modelfab.data.images import load_rgb

    return lambda row: load_rgb(store.artifacts.local_path(row.content_hash))


@dataclass
class FitResult:
    model: Model
    run_id: str
    items: int
    rule: str
    seconds: float
    fitted: dict[str, Any]


def fit_screen(
    store: Store, *, backbone: str, normal: str, split: str | None = "train", scorer: str = "knn-memory",
    config: dict[str, Any] | None = None, name: str | None = None, task: str | None = None,
) -> FitResult:
    """Fit ``scorer`` on the normal items of ``normal`` with ``backbone``'s features and register it."""
    ref, split = parse_split(normal, split)
    dv, rows, rule = normal_rows(store, ref, split, task)
    bb, bb_model = load_vision_backbone(store, backbone)
    screener = make_screener(bb, scorer, config)
    name = name or f"{dv.dataset.name}-{scorer}"
    normal_ref = f"{dv.dataset.name}@{dv.version}"
    inputs = {"backbone": bb_model.id, "normal": normal_ref, "split": split}
    with tracked_run(store, "screen-fit", config={"scorer": scorer, **screener.scorer.config.model_dump()},
                     inputs=inputs) as run:
        t0 = time.perf_counter()
        screener.fit(rows, row_loader(store))
        seconds = time.perf_counter() - t0
        fitted = screener.scorer.meta()
        model = register_screener(
            store, screener, name=name, backbone_model=bb_model, normal_version=dv.id,
            normal_ref=normal_ref, run_id=run.id, metrics={"fit": {**fitted, "seconds": seconds}},
        )
        finish_run(store, run.id, outputs={"model": model.id, "name": f"{model.name}:{model.version}"},
                   metrics={"items": len(rows), "seconds": seconds, "fitted": fitted, "rule": rule})
    return FitResult(model, run.id, len(rows), rule, seconds, fitted)


@dataclass
class ScreenResult:
    run_id: str
    calibration: Calibration
    data_ref: str
    screened: int
    ranked: list[tuple[str, float]]  # items to label, highest score first
    filtered: list[tuple[str, float]]  # items screened out as normal
    version: DatasetVersion | None
    version_ref: str | None = None
    observed: dict[str, Any] = field(default_factory=dict)
    heatmaps: list[Path] = field(default_factory=list)

    @property
    def filtered_fraction(self) -> float:
        return len(self.filtered) / max(self.screened, 1)


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-80:]


def run_screen(
    store: Store, *, model: str, data: str, calibration: str, target_recall: float = 0.95,
    confidence: float = 0.95, task: str | None = None, heatmaps: Path | None = None, heatmap_limit: int = 50,
) -> ScreenResult:
    """Calibrate the threshold on ``calibration`` only, screen ``data`` and write the version to label."""
    need = defects_needed(target_recall, confidence)
    cal_ref, cal_split = parse_split(calibration, "calibration")
    data_ref, data_split = parse_split(data, None)
    _, cal_rows, is_defect, tname = defect_split(store, cal_ref, cal_split, task)
    n_def = sum(is_defect)
    if n_def == 0:
        raise DataError(f"calibration: {cal_ref}:{cal_split} has no {tname} defects; cannot set a recall threshold")
    if n_def < need:
        raise DataError(f"calibration: {n_def} defects in {cal_ref}:{cal_split} cannot show recall >= "
                        f"{target_recall:g} at {confidence:.0%} confidence even with no miss; {need} are needed")
    dv = store.get_dataset_version(data_ref)
    rows = in_split(store.version_items(dv.id), data_split)
    dref = f"{dv.dataset.name}@{dv.version}" + (f":{data_split}" if data_split else "")
    if not rows:
        raise DataError(f"nothing to screen: {dref} has no items")
    screener, smodel = load_screener(store, model)
    load = row_loader(store)
    config = {"model": smodel.id, "target_recall": target_recall, "confidence": confidence, "task": tname}
    inputs = {"data": dref, "calibration": f"{cal_ref}:{cal_split}"}
    with tracked_run(store, "screen", config=config, inputs=inputs) as run:
        cal_scores, _ = screener.score(cal_rows, load)
        flags = np.array(is_defect)
        cal = calibrate_threshold(cal_scores.numpy()[flags], target_recall, confidence, cal_scores.numpy()[~flags])
        scores, maps = screener.score(rows, load)
        order = np.argsort(-scores.numpy(), kind="stable")
        ranked = [(rows[i].key, float(scores[i])) for i in order if scores[i] >= cal.threshold]
        filtered = [(rows[i].key, float(scores[i])) for i in order if scores[i] < cal.threshold]
        observed = _observed(dv, rows, scores.numpy(), cal.threshold, tname)
        paths: list[Path] = []
        if heatmaps is not None and maps is not None:
            index = {r.key: i for i, r in enumerate(rows)}
            vmax = float(maps.max())
            for rank, (key, score) in enumerate(ranked[:heatmap_limit]):
                i = index[key]
                paths.append(save_heatmap(load(rows[i]), maps[i], heatmaps / f"{rank:04d}_{_safe(key)}.png",
                                          score=score, threshold=cal.threshold, vmax=vmax))
        version = _write_version(store, dv, ranked, filtered, smodel, cal, run.id) if ranked else None
        metrics = {"calibration": cal.to_dict(), "screened": len(rows), "to_label": len(ranked),
                   "filtered": len(filtered), "filtered_fraction": len(filtered) / len(rows), **observed}
        outputs = {"version": f"{dv.dataset.name}@{version.version}" if version else None,
                   "threshold": cal.threshold, "filtered": [k for k, _ in filtered],
                   "heatmaps": [str(p) for p in paths]}
        finish_run(store, run.id, outputs=outputs, metrics=metrics)
    vref = f"{dv.dataset.name}@{version.version}" if version else None
    return ScreenResult(run.id, cal, dref, len(rows), ranked, filtered, version, vref, observed, paths)


def _observed(
    dv: DatasetVersion, rows: list[ItemRow], scores: np.ndarray, threshold: float, task: str
) -> dict[str, Any]:
    """Recall and normals filtered on the screened items themselves, when they carry visible labels."""
    from modelfab.data.tasks import get_task, task_labels

    if task not in (dv.tasks or {}):
        return {}
    view = get_task(dv.tasks, task)
    labels = task_labels(rows, view)
    pos = positive_class(view, task)
    y = np.array([labels.get(r.key) == pos for r in rows])
    known = np.array([r.key in labels for r in rows])
    out: dict[str, Any] = {}
    if (y & known).any():
        out["observed_recall"] = float((scores[y & known] >= threshold).mean())
    if (~y & known).any():
        out["observed_normals_filtered"] = float((scores[~y & known] < threshold).mean())
    return out


def _write_version(
    store: Store, dv: DatasetVersion, ranked: list[tuple[str, float]], filtered: list[tuple[str, float]],
    smodel: Model, cal: Calibration, run_id: str,
) -> DatasetVersion:
    """A child version with only the items to label; ``screen_score`` / ``screen_rank`` as labels."""
    base, spec = spec_from_version(store, dv.id)
    keep = {k: (rank, score) for rank, (k, score) in enumerate(ranked)}
    labels = {k: dict(v) for k, v in spec.labels.items() if k in keep}
    for k, (rank, score) in keep.items():
        labels.setdefault(k, {}).update({"screen_score": score, "screen_rank": rank})
    schema = {**spec.label_schema,
              "screen_score": {"type": "float", "description": f"anomaly score of {smodel.name}:{smodel.version}"},
              "screen_rank": {"type": "int", "description": "0 = most anomalous; label in this order"}}
    new = VersionSpec(
        items=[i for i in spec.items if i.key in keep],
        labels=labels,
        hidden={k: v for k, v in spec.hidden.items() if k in keep},
        splits={k: v for k, v in spec.splits.items() if k in keep},
        tasks=spec.tasks, label_schema=schema, split_info=spec.split_info,
        message=(f"screen {smodel.name}:{smodel.version} (run {run_id}): {len(ranked)} items to label, "
                 f"{len(filtered)} filtered as normal (listed in the run) at threshold {cal.threshold:.6g}, "
                 f"recall >= {cal.target_recall:g} with {cal.confidence:.0%} confidence "
                 f"(bound {cal.recall_bound:.4f} on {cal.defects} calibration defects)"),
    )
    version, _ = create_version(store, base.dataset.name, base.dataset.modality, new, parent=base.id)
    return version
