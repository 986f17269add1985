"""The ELPV solar-cell dataset (PyPI ``elpv-dataset``, CC-BY-NC-SA 4.0): 2,624 EL images.

Label fields: ``probability`` (defect probability 0, 1/3, 2/3, 1) and ``cell_type`` (mono/poly).
Tasks (label views): ``elpv-defect`` (defective = probability >= 0.5, all images) and
``elpv-strict`` (0 -> normal, 1 -> defective; uncertain images left out). Official split:
stratified by (probability, cell type), seed 0, train 55 / val 10 / calibration 15 / test 20.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from modelfab.core.errors import ConfigError
from modelfab.core.optional import import_optional
from modelfab.data.importers import import_image_folder
from modelfab.data.result import ImportResult
from modelfab.data.tasks import TaskView, ValueClass
from modelfab.store.store import Store

ELPV_TASKS: dict[str, Any] = {
    "elpv-defect": TaskView(
        type="binary",
        field="probability",
        rule="threshold",
        threshold=0.5,
        classes=["normal", "defective"],
        positive="defective",
        description="defective = probability >= 0.5; all 2,624 images",
    ).model_dump(),
    "elpv-strict": TaskView(
        type="binary",
        field="probability",
        rule="map",
        mapping=[ValueClass(value=0.0, name="normal"), ValueClass(value=1.0, name="defective")],
        classes=["normal", "defective"],
        positive="defective",
        description="probability 0 vs 1; the 401 uncertain images left out",
    ).model_dump(),
}


def elpv_root() -> Path:
    """Folder holding ``labels.csv`` and ``images/`` inside the installed package."""
    package = import_optional("elpv_dataset", "elpv-dataset", "elpv")
    return Path(package.__file__).parent / "data"


def read_elpv_labels(root: Path) -> dict[str, dict[str, Any]]:
    """``images/cellNNNN.png`` -> {probability, cell_type} from the package's labels.csv."""
    out = {}
    for line in (root / "labels.csv").read_text().splitlines():
        if line.strip():
            path, prob, kind = line.split()
            out[path] = {"probability": float(prob), "cell_type": kind}
    return out


def subset_keys(keys: list[str], size: int, skip: int = 0) -> set[str]:
    """A deterministic subset: keys ordered by the hash of their name, the window [skip, skip + size).

    Hash order is a seeded-free shuffle, so disjoint windows give disjoint, similarly mixed subsets.
    """
    ordered = sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    return set(ordered[skip : skip + size])


def import_elpv(
    store: Store,
    name: str = "elpv",
    *,
    unlabeled: bool = False,
    strict: bool = False,
    subset: int | None = None,
    skip: int = 0,
) -> ImportResult:
    """Import ELPV images with labels, tasks and the official split (``subset``: a deterministic part).

    A subset gets its own split with the official seed, ratios and strata (probability, cell type),
    so every split of a small subset still holds both classes and both cell types.
    """
    root = elpv_root()
    labels = read_elpv_labels(root)
    if subset is not None:
        if subset < 1 or skip < 0 or skip >= len(labels):
            raise ConfigError(f"subset: need subset >= 1 and 0 <= skip < {len(labels)}")
        chosen = subset_keys(list(labels), subset, skip)
        labels = {k: v for k, v in labels.items() if k in chosen}
    strata = {k: (v["probability"], v["cell_type"]) for k, v in labels.items()}
    return import_image_folder(
        store,
        root / "images",
        name,
        unlabeled=unlabeled,
        strict=strict,
        seed=0,
        label_fields={k.split("/", 1)[1]: v for k, v in labels.items()},
        tasks=ELPV_TASKS,
        strata={k.split("/", 1)[1]: v for k, v in strata.items()},
        stratify_names=["probability", "cell_type"],
        message="import ELPV (elpv-dataset)" + (f" subset {subset} from {skip}" if subset is not None else ""),
        include=None if subset is None else {k.split("/", 1)[1] for k in labels},
    )
