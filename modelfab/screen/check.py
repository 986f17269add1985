"""``data check``: label quality of a stored dataset version (see :mod:`modelfab.screen.quality`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfab.data.tasks import task_labels
from modelfab.screen.embeddings import embedding_source
from modelfab.screen.quality import QualityConfig, QualityReport, check_quality
from modelfab.screen.queue import label_view
from modelfab.store.datasets import ItemRow
from modelfab.store.runs import finish_run, tracked_run
from modelfab.store.store import Store


@dataclass
class DatasetCheck:
    """A quality report with the items it indexes."""

    dataset: str
    task: str | None
    field: str
    classes: list[str]
    rows: list[ItemRow]
    labels: dict[str, str]
    report: QualityReport
    run_id: str

    def flagged(self) -> list[dict[str, Any]]:
        """One record per (item, issue): the rows of the CSV and JSON outputs."""
        out: list[dict[str, Any]] = []
        for li in self.report.label_issues:
            r = self.rows[li.index]
            out.append(self._rec(r, "label", self.classes[li.suggested], li.quality, ""))
        for o in self.report.outliers:
            out.append(self._rec(self.rows[o.index], "outlier", "", o.score, ""))
        for g, group in enumerate(self.report.duplicates):
            for i in group.indices:
                out.append(self._rec(self.rows[i], f"{group.kind}-duplicate", "", group.similarity, str(g + 1)))
        return out

    def _rec(self, r: ItemRow, issue: str, suggested: str, score: float, group: str) -> dict[str, Any]:
        return {
            "key": r.key,
            "split": r.split or "",
            "issue": issue,
            "given": self.labels.get(r.key, ""),
            "suggested": suggested,
            "score": round(float(score), 6),
            "group": group,
        }

    def to_dict(self) -> dict[str, Any]:
        rep = self.report
        return {
            "dataset": self.dataset,
            "task": self.task,
            "items": rep.items,
            "labeled": rep.labeled,
            "counts": {
                "label": len(rep.label_issues),
                "outlier": len(rep.outliers),
                "exact-duplicate": sum(len(g.indices) for g in rep.duplicates if g.kind == "exact"),
                "near-duplicate": sum(len(g.indices) for g in rep.duplicates if g.kind == "near"),
            },
            "duplicate_groups": [
                {"keys": [self.rows[i].key for i in g.indices], "kind": g.kind, "similarity": g.similarity}
                for g in rep.duplicates
            ],
            "flagged": self.flagged(),
            "notes": rep.notes,
            "run": self.run_id,
        }


def check_dataset(
    store: Store, data: str, *, task: str | None = None, backbone: str | None = None, cfg: QualityConfig | None = None
) -> DatasetCheck:
    """Check every item of a version (all splits); records a Run of kind ``data-check``."""
    cfg = cfg or QualityConfig()
    dv = store.get_dataset_version(data)
    ref = f"{dv.dataset.name}@{dv.version}"
    task_name, view = label_view(dv.tasks, task)
    rows = store.version_items(dv.id)
    labels = task_labels(rows, view)
    classes = list(view.classes) + sorted(set(labels.values()) - set(view.classes))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[labels[r.key]] if r.key in labels else -1 for r in rows], dtype=np.int64)
    with tracked_run(
        store, "data-check", config=cfg.model_dump(), inputs={"data": ref, "task": task_name, "backbone": backbone}
    ) as run:
        emb = None
        if backbone:
            emb = embedding_source(store, dv.dataset.modality, model=None, backbone=backbone).embed(rows)
        report = check_quality([r.content_hash for r in rows], emb, y, len(classes), cfg)
        result = DatasetCheck(ref, task_name, view.field, classes, rows, labels, report, run.id)
    summary = result.to_dict()
    finish_run(store, run.id, outputs={"flagged": len(summary["flagged"])}, metrics=summary["counts"])
    return result
