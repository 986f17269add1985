from __future__ import annotations

import json
from pathlib import Path

from modelfab.store.store import Store


def test_models_list_show_lineage(cli, store: Store, image_folder: Path) -> None:
    assert cli("data", "import", str(image_folder), "--name", "line").code == 0
    w = store.artifacts.put_tensors({})
    l0 = store.register_model(name="lite0", tier="L0", task="embedding", params=4_652_008, weights=w)
    l1 = store.register_model(name="solar", tier="L1", task="embedding", parent=l0.id, dataset_version="line@1")
    store.register_model(name="cell-defect", tier="L2", task="image-defect", parent=l1.id, metrics={"auroc": 0.9})
    models = json.loads(cli("models", "list", "--json").out)
    assert [m["tier"] for m in models] == ["L0", "L1", "L2"]
    assert json.loads(cli("models", "list", "--tier", "L2", "--json").out)[0]["name"] == "cell-defect"
    tree = json.loads(cli("models", "lineage", "cell-defect", "--json").out)
    assert tree[0]["name"] == "lite0"
    assert tree[0]["children"][0]["dataset"] == "line@1"
    assert tree[0]["children"][0]["children"][0]["name"] == "cell-defect"
    drawn = cli("models", "lineage").out
    assert "L0" in drawn and "L1" in drawn and "L2" in drawn and "data=line@1" in drawn
    shown = json.loads(cli("models", "show", "cell-defect", "--json").out)
    assert shown["metrics"] == {"auroc": 0.9} and shown["card"]["parent"] == l1.id
    assert cli("models", "alias", "cell-defect", "production").code == 0
    assert json.loads(cli("models", "show", "cell-defect@production", "--json").out)["name"] == "cell-defect"
    assert "cell-defect" in cli("models", "list").out


def test_runs_recorded(cli, backend_home: str, image_folder: Path) -> None:
    assert cli("data", "import", str(image_folder), "--name", "p").code == 0
    assert cli("data", "import", str(image_folder / "nothing"), "--name", "q").code == 2
    runs = json.loads(cli("runs", "list", "--json").out)
    assert [r["status"] for r in runs] == ["succeeded"]
    assert runs[0]["outputs"]["dataset"] == "p@1"
    shown = json.loads(cli("runs", "show", runs[0]["id"], "--json").out)
    assert shown["metrics"]["items"] == 24
    assert "import" in cli("runs", "list").out


def test_doctor(cli, home: Path, backend_home: str) -> None:
    res = cli("doctor", "--json")
    info = json.loads(res.out)
    from alembic.script import ScriptDirectory

    from modelfab.store.db import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert info["database_ok"] and info["schema_revision"] == head and head is not None
    assert info["home"] == str(home)
    assert info["database"].startswith(backend_home)
