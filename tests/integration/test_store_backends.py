"""Versions, models, lineage and runs behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.store import models as reg
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version, spec_from_version, version_items
from modelfab.store.runs import finish_run, list_runs, start_run
from modelfab.store.schema import Label, VersionItem
from modelfab.store.store import Store


def _items(n: int) -> list[ItemSpec]:
    return [ItemSpec(f"t{i}", f"{i:064x}", text=f"text {i}") for i in range(n)]


def test_versions_parent_and_dedup(backend_store: Store) -> None:
    spec = VersionSpec(
        items=_items(5),
        labels={"t0": {"label": "a"}},
        hidden={"t1": {"label": "b"}},
        splits={"t0": "train", "t1": "test"},
    )
    v1, created = create_version(backend_store, "reviews", "text", spec)
    assert created and v1.version == 1 and v1.parent_id is None
    again, created = create_version(backend_store, "reviews", "text", spec)
    assert not created and again.id == v1.id
    _, spec2 = spec_from_version(backend_store, "reviews@1")
    spec2.labels = {**spec2.labels, "t2": {"label": "a"}}
    v2, created = create_version(backend_store, "reviews", "text", spec2)
    assert created and v2.version == 2 and v2.parent_id == v1.id
    rows = {r.key: r for r in version_items(backend_store, "reviews@2")}
    assert rows["t2"].labels == {"label": "a"} and rows["t1"].labels == {} and rows["t1"].hidden == {}
    truth = {r.key: r for r in version_items(backend_store, "reviews@2", include_hidden=True)}
    assert truth["t1"].hidden == {"label": "b"}
    assert version_items(backend_store, "reviews")[0].key == "t0"  # latest by default


def test_bad_versions_write_nothing(backend_store: Store) -> None:
    with pytest.raises(DataError, match="unknown items"):
        create_version(backend_store, "d", "text", VersionSpec(items=_items(2), labels={"zz": {"label": "a"}}))
    with pytest.raises(DataError, match="duplicate"):
        create_version(backend_store, "d", "text", VersionSpec(items=_items(2) + _items(1)))
    create_version(backend_store, "d", "text", VersionSpec(items=_items(2)))
    with pytest.raises(DataError, match="holds text items"):
        create_version(backend_store, "d", "image", VersionSpec(items=_items(3)))
    with backend_store.session() as s:
        assert s.scalar(select(func.count()).select_from(VersionItem)) == 2
        assert s.scalar(select(func.count()).select_from(Label)) == 0
    with pytest.raises(NotFoundError, match="unknown dataset 'nope'; known: d"):
        version_items(backend_store, "nope@1")
    with pytest.raises(NotFoundError, match="no version 7"):
        version_items(backend_store, "d@7")


def test_models_lineage_and_aliases(backend_store: Store) -> None:
    create_version(backend_store, "plant", "text", VersionSpec(items=_items(3)))
    weights = backend_store.artifacts.put_bytes(b"weights-bytes")
    l0 = reg.register_model(backend_store, name="base", tier="L0", task="embedding", params=100, weights=weights)
    l1 = reg.register_model(
        backend_store, name="industry", tier="L1", task="embedding", parent=l0.id, dataset_version="plant@1"
    )
    l2a = reg.register_model(
        backend_store, name="line-a", tier="L2", task="binary", parent="industry", metrics={"auroc": 0.91}
    )
    l2a2 = reg.register_model(backend_store, name="line-a", tier="L2", task="binary", parent=l1.id)
    assert (l2a.version, l2a2.version) == (1, 2)
    assert reg.get_model(backend_store, "line-a").id == l2a2.id
    assert reg.get_model(backend_store, "line-a:1").id == l2a.id
    reg.set_alias(backend_store, "line-a:1", "production")
    assert reg.get_model(backend_store, "line-a@production").id == l2a.id
    reg.set_alias(backend_store, "line-a:2", "production")
    assert reg.get_model(backend_store, "line-a@production").id == l2a2.id
    [root] = reg.lineage(backend_store, "line-a:1")
    assert root.model.id == l0.id
    [child] = root.children
    assert child.model.id == l1.id and child.dataset == "plant@1"
    assert {c.model.id for c in child.children} == {l2a.id, l2a2.id}
    card = reg.model_card(backend_store, l2a.id)
    assert card["parent"] == l1.id and card["metrics"] == {"auroc": 0.91}
    with pytest.raises(NotFoundError, match="unknown model 'ghost'"):
        reg.get_model(backend_store, "ghost")
    with pytest.raises(ConfigError, match="tier"):
        reg.register_model(backend_store, name="x", tier="L9", task="t")
    with pytest.raises(NotFoundError, match="weights artifact"):
        reg.register_model(backend_store, name="x", tier="L0", task="t", weights="a" * 64)


def test_runs(backend_store: Store) -> None:
    run = start_run(backend_store, "tune", config={"lr": 0.1})
    finish_run(backend_store, run.id, outputs={"model": "m-1"}, metrics={"loss": 0.5})
    [got] = list_runs(backend_store)
    assert got.status == "succeeded" and got.outputs == {"model": "m-1"} and got.ended_at is not None
