"""Operations deriving a new version from an existing one."""

from __future__ import annotations

from collections.abc import Mapping

from modelfab.core.errors import DataError
from modelfab.data.result import ImportResult
from modelfab.data.splits import split_hash, stratified_split
from modelfab.data.tasks import get_task
from modelfab.store.datasets import create_version, spec_from_version
from modelfab.store.store import Store


def resplit(
    store: Store, ref: str, ratios: Mapping[str, float], *, seed: int = 0, stratify: str | None = None
) -> ImportResult:
    """A new version of ``ref`` with a deterministic split, stratified by a label field or task.

    Stratifying reads visible labels only; items without the field form their own stratum.
    """
    base, spec = spec_from_version(store, ref)
    strata: dict[str, object] = {}
    for item in spec.items:
        labels = spec.labels.get(item.key, {})
        if stratify is None:
            strata[item.key] = None
        elif stratify in base.tasks:
            strata[item.key] = get_task(base.tasks, stratify).label_of(labels.get(get_task(base.tasks, stratify).field))
        elif any(stratify in v for v in spec.labels.values()):
            strata[item.key] = labels.get(stratify)
        else:
            raise DataError(f"cannot stratify by {stratify!r}: no such visible label field or task")
    splits = stratified_split(strata, ratios, seed)
    spec.splits = splits
    spec.split_info = {
        "seed": seed,
        "ratios": dict(ratios),
        "stratify": [stratify] if stratify else [],
        "hash": split_hash(splits),
    }
    spec.message = f"split seed={seed}"
    dv, created = create_version(store, base.dataset.name, base.dataset.modality, spec, parent=base.id)
    return ImportResult(base.dataset.name, dv, created, len(spec.items))
