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


def reveal_ground_truth(store: Store, ref: str, *, keys: set[str] | None = None) -> ImportResult:
    """A new version of ``ref`` whose hidden ground truth becomes visible labels (the labeling oracle).

    For demos and benchmarks only: the version's message says the labels came from the oracle.
    ``keys``: reveal only these items. An item without ground truth is an error (nothing written).
    """
    base, spec = spec_from_version(store, ref)
    wanted = {i.key for i in spec.items} if keys is None else keys
    missing = sorted(k for k in wanted if not spec.hidden.get(k))
    if missing:
        raise DataError(
            f"{base.dataset.name}@{base.version}: {len(missing)} items have no hidden ground truth to reveal "
            f"(import with --unlabeled keeps it), e.g. {', '.join(missing[:3])}"
        )
    labels = {k: dict(v) for k, v in spec.labels.items()}
    for key in wanted:
        labels.setdefault(key, {}).update(spec.hidden[key])
    spec.labels = labels
    spec.message = f"oracle: ground truth of {len(wanted)} items revealed as labels"
    dv, created = create_version(store, base.dataset.name, base.dataset.modality, spec, parent=base.id)
    return ImportResult(base.dataset.name, dv, created, len(spec.items))
