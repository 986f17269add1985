"""Shared fixtures: a private MODELFAB_HOME per test, SQLite and PostgreSQL stores, the CLI in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelfab.core.config import Settings
from modelfab.store.pgserver import PostgresUnavailable, TemporaryPostgres
from modelfab.store.store import Store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MODELFAB_HOME (SQLite + artifacts) for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("MODELFAB_HOME", str(h))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    monkeypatch.delenv("MODELFAB_ARTIFACTS", raising=False)
    return h


@pytest.fixture()
def store(home: Path) -> Iterator[Store]:
    st = Store(Settings.from_env())
    yield st
    st.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres | None]:
    """One throwaway PostgreSQL cluster per session; None when unavailable (a failure in CI)."""
    try:
        pg = TemporaryPostgres().start()
    except (PostgresUnavailable, OSError) as exc:
        if os.environ.get("MODELFAB_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL required (MODELFAB_REQUIRE_PG) but cannot start: {exc}")
        yield None
        return
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(
    request: pytest.FixtureRequest, home: Path, postgres: TemporaryPostgres | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """The same test on SQLite and on a real PostgreSQL server."""
    if request.param == "postgresql":
        if postgres is None:
            pytest.skip("no PostgreSQL server binaries on this machine (required in CI)")
        monkeypatch.setenv("MODELFAB_DB", postgres.create_database())
    st = Store(Settings.from_env())
    yield st
    st.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_home(
    request: pytest.FixtureRequest, home: Path, postgres: TemporaryPostgres | None, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh MODELFAB_HOME whose database is SQLite or a fresh PostgreSQL database (for CLI tests)."""
    if request.param == "postgresql":
        if postgres is None:
            pytest.skip("no PostgreSQL server binaries on this machine (required in CI)")
        monkeypatch.setenv("MODELFAB_DB", postgres.create_database())
    return str(request.param)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the CLI in-process: ``cli("data", "list", "--json")`` -> CliResult."""
    from modelfab.cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_image(path: Path, size: tuple[int, int] = (32, 24), mode: str = "RGB", seed: int = 0) -> Path:
    """A real image file with random content."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr16 = rng.integers(0, 65535, size=(size[1], size[0]), dtype=np.uint16)
        Image.fromarray(arr16).save(path)
        return path
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    arr = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    im = (
        Image.fromarray(arr[:, :, :3]).convert("CMYK")
        if mode == "CMYK"
        else Image.fromarray(arr[:, :, 0] if channels == 1 else arr)
    )
    im.save(path)
    return path


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """Class subfolders ok/ and ng/ with 12 valid images each."""
    root = tmp_path / "images"
    for cls in ("ok", "ng"):
        for i in range(12):
            write_image(root / cls / f"{cls}{i:02d}.png", seed=hash((cls, i)) % 1000)
    return root


def _gpu_skip(item: pytest.Item, reason: str) -> bool:
    return item.get_closest_marker("gpu") is not None or "CUDA" in reason


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (``CI`` set by .ci/run) only GPU tests may skip: any other skip is a failure, so a
    missing extra or server cannot silently hide tests."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not _gpu_skip(item, reason):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where only GPU tests may skip: {reason}"
