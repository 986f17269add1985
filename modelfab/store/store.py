"""The registry store: one database (SQLite or PostgreSQL) plus one artifact store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from modelfab.core.config import Settings
from modelfab.core.errors import ConflictError, ModelfabError
from modelfab.store.artifacts import ArtifactStore
from modelfab.store.db import make_engine, migrate

if TYPE_CHECKING:
    from modelfab.store.datasets import ItemRow
    from modelfab.store.schema import DatasetVersion, Model


def new_id(prefix: str) -> str:
    """A short random id such as ``m-3f9a0c1b2d4e``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Store:
    """Database + artifacts. Reads use :meth:`session`, writes :meth:`transaction`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = make_engine(settings.db_url, write=True)
            self._read_engine: Engine = (
                make_engine(settings.db_url, write=False) if self.engine.dialect.name == "sqlite" else self.engine
            )
            migrate(self.engine)
        except OperationalError as exc:
            raise ModelfabError(f"cannot open database {self.safe_db_url}: {exc.orig}") from None
        self.artifacts = ArtifactStore(settings.artifacts_url)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def safe_db_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else "?"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (nothing is committed)."""
        with self._read() as s:
            yield s

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        try:
            with self._write.begin() as s:
                yield s
        except OperationalError as exc:
            if "locked" in str(exc.orig) or "busy" in str(exc.orig):
                raise ConflictError(f"database is busy, try again: {exc.orig}") from None
            raise

    def ping(self) -> bool:
        with self._read_engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    # -- convenience verbs (the functions live in models.py / datasets.py / runs.py) --------------
    def register_model(self, **kwargs: Any) -> Model:
        """See :func:`modelfab.store.models.register_model`."""
        from modelfab.store.models import register_model

        return register_model(self, **kwargs)

    def get_model(self, ref: str) -> Model:
        """Resolve an id, ``name``, ``name:version`` or ``name@alias``."""
        from modelfab.store.models import get_model

        return get_model(self, ref)

    def get_dataset_version(self, ref: str | int) -> DatasetVersion:
        """Resolve ``name``, ``name@version`` or a version id."""
        from modelfab.store.datasets import get_version

        return get_version(self, ref)

    def version_items(self, ref: str | int, *, include_hidden: bool = False) -> list[ItemRow]:
        """Items of a dataset version with labels and splits; see :func:`datasets.version_items`."""
        from modelfab.store.datasets import version_items

        return version_items(self, ref, include_hidden=include_hidden)

    def close(self) -> None:
        self.engine.dispose()
        if self._read_engine is not self.engine:
            self._read_engine.dispose()


def open_store(settings: Settings | None = None) -> Store:
    """Open (and migrate) the store configured by ``MODELFAB_HOME`` / ``MODELFAB_DB``."""
    return Store(settings or Settings.from_env())
