"""The Alembic migrations produce exactly the ORM schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from modelfab.store.schema import Base
from modelfab.store.store import Store


def test_migrations_match_models(backend_store: Store) -> None:
    with backend_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_tables_and_pragmas(backend_store: Store) -> None:
    tables = set(inspect(backend_store.engine).get_table_names())
    expected = {
        "datasets",
        "dataset_versions",
        "items",
        "version_items",
        "labels",
        "models",
        "model_aliases",
        "latency_profiles",
        "runs",
        "deployments",
        "feedback",
        "alembic_version",
    }
    assert expected <= tables
    if backend_store.dialect == "sqlite":
        with backend_store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_reopen_is_idempotent(backend_store: Store) -> None:
    again = Store(backend_store.settings)
    assert again.ping()
    again.close()
