"""A store opens while another process holds the brand-new database file locked (as a concurrent
first writer does): it waits for the lock instead of failing with "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from modelfab.core.config import Settings
from modelfab.store.store import Store

HOLDER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("BEGIN EXCLUSIVE")
c.execute("CREATE TABLE unrelated(a)")
print("locked", flush=True)
time.sleep(1.5)
c.execute("COMMIT")
"""


def test_store_opens_after_a_concurrent_exclusive_lock(tmp_path: Path) -> None:
    db = tmp_path / "modelfab.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    start = time.monotonic()
    store = Store(Settings(home=tmp_path, db_url=f"sqlite:///{db}", artifacts_url=str(tmp_path / "artifacts")))
    waited = time.monotonic() - start
    assert holder.wait(timeout=30) == 0
    assert 0.5 < waited < 30, waited  # it waited for the holder, then opened
    from modelfab.store.datasets import list_datasets

    assert list_datasets(store) == []
