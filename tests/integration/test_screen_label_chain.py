"""The whole loop through the CLI on generated cells and a real Lite0: screen fit -> screen run on a new,
unlabeled batch -> label queue on the items that need human eyes -> labels filled in -> import-labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_cell

FIT = ("--image-size", "64", "--layers", "block4,block10")
LOW = ("--target-recall", "0.7", "--confidence", "0.9")  # 7 calibration defects suffice, the split gives 8


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("good", 40), ("ng", 54)):  # labeled history: 'ng' (the second class) is the defect
        for i in range(n):
            write_cell(tmp_path / "cells" / cls / f"{cls}{i:03d}.png", cls == "ng", rng)
    for i in range(24):  # today's unlabeled batch: a quarter defective, names keep the truth for the oracle
        write_cell(tmp_path / "batch" / f"{'ng' if i % 4 == 0 else 'good'}-{i:02d}.png", i % 4 == 0, rng)
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    return tmp_path


def test_screen_then_label_queue_then_import(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("data", "import", str(env / "cells"), "--name", "cells").code == 0
    assert cli("data", "import", str(env / "batch"), "--name", "batch").code == 0
    assert cli("models", "add-foundation", "efficientnet-lite0", "--as", "lite0-64", "--image-size", "64").code == 0
    res = cli("screen", "fit", "--backbone", "lite0-64", "--normal", "cells@1", *FIT, "--name", "cells-knn")
    assert res.code == 0, res.err
    res = cli("screen", "run", "--model", "cells-knn", "--data", "batch@1", "--calibration", "cells@1", *LOW, "--json")
    assert res.code == 0, res.err
    screened = json.loads(res.out)
    assert screened["version"] == "batch@2" and screened["screened"] == 24
    to_label = screened["to_label"]
    assert 0 < to_label <= 24

    budget = min(4, to_label)
    out = env / "queue.json"
    res = cli("label", "queue", "--data", "batch@2", "--split", "all", "--budget", str(budget),
              "--backbone", "lite0-64", "--out", str(out), "--json")  # fmt: skip
    assert res.code == 0, res.err
    queued = json.loads(res.out)
    assert queued["pool"] == to_label and queued["labeled"] == 0 and len(queued["items"]) == budget
    tasks = json.loads(out.read_text())
    for task in tasks:
        key = task["data"]["item"]
        choice = "ng" if key.startswith("ng-") else "good"
        task["annotations"] = [{"result": [{"from_name": "label", "value": {"choices": [choice]}}]}]
    out.write_text(json.dumps(tasks))
    res = cli("data", "import-labels", "batch@2", str(out), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["dataset"] == "batch@3"
    shown = json.loads(cli("data", "show", "batch@3", "--json").out)
    assert shown["items"] == to_label and shown["label_fields"]["label"] == budget
    # the next queue skips what was just labeled
    res = cli("label", "queue", "--data", "batch@3", "--split", "all", "--budget", "1", "--backbone", "lite0-64",
              "--json")  # fmt: skip
    if to_label > budget:
        assert res.code == 0, res.err
        assert json.loads(res.out)["items"][0]["key"] not in {t["data"]["item"] for t in tasks}
    else:
        assert res.code == 2 and "every item" in res.err
