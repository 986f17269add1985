"""The CLI command functions (wired as the app wires them): add-foundation, zoo, adapt --json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from modelfab.cli.adapt import adapt
from modelfab.cli.zoo import add_foundation, zoo_list
from modelfab.core.errors import NotFoundError
from modelfab.data import import_image_folder
from modelfab.store import open_store

pytestmark = pytest.mark.slow


def make_app() -> typer.Typer:
    app = typer.Typer()
    models = typer.Typer()
    models.command("add-foundation")(add_foundation)
    models.command("zoo")(zoo_list)
    app.add_typer(models, name="models")
    app.command("adapt")(adapt)
    return app


def write_images(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), mode="L").save(folder / f"{i:03d}.png")
    return folder


def test_add_foundation_then_adapt_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    import_image_folder(open_store(), write_images(tmp_path / "imgs", 40), "imgs")
    app, runner = make_app(), CliRunner()
    listed = runner.invoke(app, ["models", "zoo", "--json"])
    assert listed.exit_code == 0 and "efficientnet-lite0" in {r["name"] for r in json.loads(listed.stdout)}
    first = runner.invoke(app, ["models", "add-foundation", "efficientnet-lite0", "--as", "lite0", "--json"])
    assert first.exit_code == 0, first.output
    info = json.loads(first.stdout)
    assert info["created"] and info["tier"] == "L0" and info["params"] == 4_652_008
    again = runner.invoke(app, ["models", "add-foundation", "efficientnet-lite0", "--as", "lite0", "--json"])
    assert json.loads(again.stdout)["id"] == info["id"] and not json.loads(again.stdout)["created"]
    unknown = runner.invoke(app, ["models", "add-foundation", "resnet-9000"])
    assert isinstance(unknown.exception, NotFoundError) and "efficientnet-lite0" in str(unknown.exception)
    args = ["adapt", "--base", "lite0", "--data", "imgs", "--name", "imgs-l1", "--steps", "2", "--batch-size", "8",
            "--resolution", "64", "--cache-views", "2", "--threads", "1", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    l1 = json.loads(out.stdout)
    assert l1["tier"] == "L1" and l1["parent"] == info["id"] and l1["steps"] == 2
    assert Path(l1["loss_curve"]).is_file()
