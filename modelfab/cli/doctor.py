"""``modelfab doctor``: versions, store location, database reachable."""

from __future__ import annotations

import platform
from importlib import metadata

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json
from modelfab.core.config import Settings
from modelfab.store.db import schema_revision
from modelfab.store.store import open_store

PACKAGES = ("modelfab", "torch", "sqlalchemy", "alembic", "numpy", "pillow", "safetensors", "elpv-dataset")


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def doctor(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Check the installation: package versions, store location, database reachable."""
    settings = Settings.from_env()
    report: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "home": str(settings.home),
        "artifacts": settings.artifacts_url,
    }
    st = open_store(settings)
    report["database"] = st.safe_db_url
    report["database_ok"] = st.ping()
    report["schema_revision"] = schema_revision(st.engine)
    st.close()
    if as_json:
        print_json(report)
        return
    table = Table(title="modelfab doctor", show_header=False)
    table.add_column("check", style="bold")
    table.add_column("value")
    for key in ("python", "platform", "home", "artifacts", "database"):
        table.add_row(key, str(report[key]))
    table.add_row("database reachable", "[green]yes[/]" if report["database_ok"] else "[red]no[/]")
    table.add_row("schema revision", str(report["schema_revision"]))
    for pkg, ver in report["packages"].items():  # type: ignore[attr-defined]
        table.add_row(pkg, ver)
    console.print(table)
