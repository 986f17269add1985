"""`screen fit` -> `screen run` through the CLI on a generated, labeled image dataset (real Lite0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelfab.core.config import Settings
from modelfab.store.datasets import version_items
from modelfab.store.models import list_models
from modelfab.store.runs import get_run, list_runs
from modelfab.store.store import Store

# 0.7 recall at 90% confidence needs 7 calibration defects with no miss; the split puts 8 there
FIT = ("--image-size", "64", "--layers", "block4,block10")
LOW = ("--target-recall", "0.7", "--confidence", "0.9")


def write_cells(root: Path, good: int = 40, ng: int = 54, seed: int = 0) -> Path:
    """good/ smooth cells (some RGB, some 56x40), ng/ cells with a dark crack: class 'ng' is the defect."""
    rng = np.random.default_rng(seed)
    for cls, n in (("good", good), ("ng", ng)):
        for i in range(n):
            h, w = (40, 56) if i % 5 == 0 else (48, 48)
            img = rng.normal(150, 8, size=(h, w)).clip(0, 255)
            if cls == "ng":
                row = int(rng.integers(8, h - 8))
                img[row - 1 : row + 2, 4 : w - 4] = 20
            arr = img.astype(np.uint8)
            path = root / cls / f"{cls}{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(arr[:, :, None], 3, 2) if i % 3 == 0 else arr).save(path)
    return root


@pytest.fixture(scope="module")
def screen_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("screen-cli")
    write_cells(tmp / "cells")
    (tmp / "plain").mkdir()
    for i in range(6):
        Image.fromarray(np.full((32, 32), 120 + i, dtype=np.uint8)).save(tmp / "plain" / f"p{i}.png")
    return tmp


@pytest.fixture()
def env(screen_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELFAB_HOME", str(screen_home / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    return screen_home


def open_home(home: Path) -> Store:
    return Store(Settings(home=home, db_url=f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts")))


def test_fit_run_version_and_run(cli, env: Path) -> None:
    assert cli("data", "import", str(env / "cells"), "--name", "cells").code == 0
    assert cli("models", "add-foundation", "efficientnet-lite0", "--as", "lite0-64", "--image-size", "64").code == 0
    res = cli("screen", "fit", "--backbone", "lite0-64", "--normal", "cells@1", *FIT, "--name", "cells-knn", "--json")
    assert res.code == 0, res.err
    fit = json.loads(res.out)
    assert fit["name"] == "cells-knn:1" and "non-ng" in fit["normal"] and fit["items"] == 22  # 55% of 40
    table = cli("screen", "fit", "--backbone", "lite0-64", "--normal", "cells@1:train", "--scorer", "gaussian",
                "--image-size", "64", "--name", "cells-gauss")
    assert table.code == 0 and "gaussian" in table.out and "fitted on" in table.out

    res = cli("screen", "run", "--model", "cells-knn", "--data", "cells@1:test", "--calibration", "cells@1",
              *LOW, "--heatmaps", str(env / "maps"), "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    cal = out["calibration"]
    assert cal["defects"] == 8 and cal["recall_bound"] >= 0.7 and cal["target_recall"] == 0.7
    assert out["to_label"] + out["filtered"] == out["screened"] == 19  # 20% of 94
    assert out["version"] == "cells@2" and out["filtered_fraction"] == pytest.approx(out["filtered"] / 19)
    assert len(out["heatmaps"]) == out["to_label"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in out["heatmaps"])

    store = open_home(env / "home")
    try:
        parent = store.get_dataset_version("cells@1")
        child = store.get_dataset_version("cells@2")
        assert child.parent_id == parent.id and child.item_count == out["to_label"]
        assert "filtered as normal" in child.message and out["run"] in child.message
        rows = sorted(version_items(store, child.id), key=lambda r: r.labels["screen_rank"])
        scores = [r.labels["screen_score"] for r in rows]
        assert scores == sorted(scores, reverse=True) and min(scores) >= cal["threshold"]
        assert [r.labels["screen_rank"] for r in rows] == list(range(len(rows)))
        assert all("label" in r.labels for r in rows)  # the parent's labels travel along
        assert parent.item_count == 94  # the parent is untouched
        run = get_run(store, out["run"])
        assert run.kind == "screen" and run.status == "succeeded"
        assert run.config["model"] == fit["model"] and run.inputs["calibration"] == "cells@1:calibration"
        filtered = set(run.outputs["filtered"])
        assert len(filtered) == out["filtered"] and not filtered & {r.key for r in rows}
        assert run.metrics["calibration"]["threshold"] == cal["threshold"]
    finally:
        store.close()


def test_refusals_write_nothing(cli, env: Path) -> None:
    store = open_home(env / "home")
    try:
        versions_before = store.get_dataset_version("cells").version
        runs_before = len(list_runs(store, "screen"))
        models_before = len(list_models(store, "L2"))
    finally:
        store.close()
    res = cli("screen", "run", "--model", "cells-knn", "--data", "cells@1:test", "--calibration", "cells@1")
    assert res.code == 2 and res.err.count("\n") == 1
    assert "8 defects" in res.err and "59 are needed" in res.err
    res = cli("screen", "run", "--model", "cells-knn", "--data", "cells@1", "--calibration", "cells@1",
              "--target-recall", "0.99")
    assert res.code == 2 and "299 are needed" in res.err
    assert cli("data", "import", str(env / "plain"), "--name", "plain").code == 0
    res = cli("screen", "run", "--model", "cells-knn", "--data", "plain@1", "--calibration", "plain@1", *LOW)
    assert res.code == 2 and "no labels" in res.err
    res = cli("screen", "run", "--model", "cells-knn", "--data", "cells@1", "--calibration", "cells@1:train",
              "--task", "nope", *LOW)
    assert res.code == 2 and "unknown task" in res.err
    res = cli("screen", "fit", "--backbone", "lite0-64", "--normal", "cells@1", *FIT, "--max-memory-mb", "0.001")
    assert res.code == 2 and "max_memory_mb" in res.err and res.err.count("\n") == 1
    res = cli("screen", "fit", "--backbone", "lite0-64", "--normal", "cells@1", "--layers", "block99")
    assert res.code == 2 and "unknown feature" in res.err
    res = cli("screen", "fit", "--backbone", "cells-knn", "--normal", "cells@1")
    assert res.code == 2 and "screening model" in res.err
    res = cli("screen", "run", "--model", "lite0-64", "--data", "cells@1", "--calibration", "cells@1", *LOW)
    assert res.code == 2 and "not a screening model" in res.err
    store = open_home(env / "home")
    try:
        assert store.get_dataset_version("cells").version == versions_before
        assert len(list_runs(store, "screen")) == runs_before
        assert len(list_models(store, "L2")) == models_before
    finally:
        store.close()


def test_console_script(env: Path) -> None:
    """The installed `modelfab` console script, in a subprocess: fit on the normals of the val split."""
    exe = Path(sys.executable).parent / "modelfab"
    environ = {**os.environ, "MODELFAB_HOME": str(env / "home")}
    proc = subprocess.run(
        [str(exe), "screen", "fit", "--backbone", "lite0-64", "--normal", "cells@1", "--split", "val",
         "--scorer", "embedding-knn", "--image-size", "64", "--name", "cells-emb", "--json"],
        capture_output=True, text=True, env=environ, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["name"] == "cells-emb:1" and info["items"] == 4  # 10% of 40 normals
