"""The real ELPV dataset from the elpv-dataset wheel: all 2,624 images, tasks and the official split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from modelfab.core.config import Settings
from modelfab.data import import_elpv
from modelfab.data.tasks import get_task, task_labels
from modelfab.store.store import Store


@pytest.fixture(scope="module")
def elpv_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ELPV import shared by this module (about 10 s)."""
    home = tmp_path_factory.mktemp("elpv-home")
    st = Store(Settings(home=home, db_url=f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts")))
    import_elpv(st, "elpv")
    st.close()
    return home


def test_show_elpv(cli, elpv_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFAB_HOME", str(elpv_home))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    info = json.loads(cli("data", "show", "elpv", "--json").out)
    assert info["items"] == 2624
    assert info["splits"] == {"calibration": 393, "test": 525, "train": 1443, "val": 263}
    assert info["split_info"]["stratify"] == ["probability", "cell_type"] and info["split_info"]["seed"] == 0
    defect = info["tasks"]["elpv-defect"]
    strict = info["tasks"]["elpv-strict"]
    assert defect["distribution"] == {"defective": 821, "normal": 1803}
    assert strict["distribution"] == {"defective": 715, "normal": 1508}
    assert strict["by_split"]["calibration"]["defective"] == 107
    text = cli("data", "show", "elpv").out
    assert "elpv-defect" in text and "2624 items" in text


def test_official_split_stratified(elpv_home: Path) -> None:
    st = Store(
        Settings(
            home=elpv_home, db_url=f"sqlite:///{elpv_home / 'modelfab.db'}", artifacts_url=str(elpv_home / "artifacts")
        )
    )
    rows = st.version_items("elpv@1")
    probs = Counter((r.labels["probability"], r.labels["cell_type"]) for r in rows)
    assert sum(probs.values()) == 2624
    assert Counter(r.labels["probability"] for r in rows) == {0.0: 1508, 1 / 3: 295, 2 / 3: 106, 1.0: 715}
    for stratum, n in probs.items():
        in_test = sum(
            1 for r in rows if (r.labels["probability"], r.labels["cell_type"]) == stratum and r.split == "test"
        )
        assert abs(in_test - 0.2 * n) <= 1
    st.close()


def test_unlabeled_import_hides_ground_truth(store: Store) -> None:
    result = import_elpv(store, "elpv-raw", unlabeled=True)
    dv = result.version
    rows = store.version_items(dv.id)
    assert all(r.labels == {} for r in rows)
    view = get_task(dv.tasks, "elpv-defect")
    assert task_labels(rows, view) == {}
    truth = task_labels(store.version_items(dv.id, include_hidden=True), view, ground_truth=True)
    assert Counter(truth.values()) == {"normal": 1803, "defective": 821}
    assert dv.split_info["hash"]  # the same official split as the labeled import


def test_subsets_are_disjoint_windows_and_oracle_reveals_truth(store: Store) -> None:
    from modelfab.core.errors import ConfigError, DataError
    from modelfab.data.ops import reveal_ground_truth

    a = import_elpv(store, "elpv-a", subset=120)
    b = import_elpv(store, "elpv-b", subset=80, skip=120, unlabeled=True)
    keys_a = {r.key for r in store.version_items(a.ref)}
    rows_b = store.version_items(b.ref, include_hidden=True)
    assert len(keys_a) == 120 and len(rows_b) == 80 and not keys_a & {r.key for r in rows_b}
    assert {r.split for r in rows_b} == {"train", "val", "calibration", "test"}
    assert import_elpv(store, "elpv-a", subset=120).ref == a.ref  # deterministic: same content, same version
    with pytest.raises(ConfigError, match="subset"):
        import_elpv(store, "elpv-c", subset=10, skip=5000)
    revealed = reveal_ground_truth(store, b.ref)
    assert revealed.ref == "elpv-b@2"
    truth = {r.key: r.hidden["probability"] for r in rows_b}
    assert {r.key: r.labels["probability"] for r in store.version_items(revealed.ref)} == truth
    assert "oracle" in store.get_dataset_version(revealed.ref).message
    with pytest.raises(DataError, match="no hidden ground truth"):
        reveal_ground_truth(store, a.ref)  # a labeled import keeps no hidden truth
