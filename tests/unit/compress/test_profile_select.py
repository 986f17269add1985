"""Latency profiles stored per (device, runtime, batch, threads), and selection under budgets:
ranking by validation AUROC, exclusions with reasons, nothing-fits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelfab.compress import BudgetError, export_model, extract, profile_model, select_model, stored_profiles
from modelfab.compress.profile import Timing, store_profiles
from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.core.machine import device_label
from modelfab.store.store import Store
from tests.compress_fixtures import compress_store, one_thread


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("select")
    with one_thread():
        store = compress_store(tmp / "home", tmp, swapped=True)
        export_model(store, "blobs-probe", "onnx")
        export_model(store, "blobs-probe", "onnx", tolerance=0.0, name="strict-onnx")  # parity fails
        yield store


def test_profile_rows_are_stored_and_replaced(st: Store) -> None:
    rows = profile_model(st, "blobs-probe-onnx", batches=[2, 1], threads=1, repeats=4, warmup=1)
    model = st.get_model("blobs-probe-onnx")
    size = len(st.artifacts.get_bytes(str(model.weights_digest))) / 1e6
    assert [r.batch for r in rows] == [1, 2]
    for r in rows:
        assert r.device == device_label() and r.runtime == "onnxruntime" and r.threads == 1
        assert 0 < r.p50_ms <= r.p95_ms and r.throughput == pytest.approx(r.batch * 1000 / r.p50_ms)
        assert r.size_mb == pytest.approx(size) and 0 < r.peak_memory_mb < 2000  # a 64 px Lite0: MBs, not GBs
    again = profile_model(st, "blobs-probe-onnx", batches=[1], threads=1, repeats=2, warmup=0)
    stored = stored_profiles(st, model.id)
    assert len(stored) == 2 and next(r for r in stored if r.batch == 1).p50_ms == pytest.approx(again[0].p50_ms)


def test_profile_bad_input(st: Store) -> None:
    with pytest.raises(ConfigError, match="runtime: onnxruntime cannot run blobs-probe:1"):
        profile_model(st, "blobs-probe", runtime="onnxruntime")
    with pytest.raises(ConfigError, match="batch: sizes must be >= 1"):
        profile_model(st, "blobs-probe-onnx", batches=[0])
    with pytest.raises(NotFoundError, match="unknown runtime 'tvm'"):
        profile_model(st, "blobs-probe-onnx", runtime="tvm")


def _edge_profiles(st: Store) -> None:
    """Profiles of another device (as imported from an edge box): 40 ms for the good torch L2,
    5 ms / 13.5 MB for its ONNX child, 2 ms / 1 MB for the worse swapped model."""
    cells = (("blobs-probe", "torch", 40.0, 18.0), ("blobs-probe-onnx", "onnxruntime", 5.0, 13.5),
             ("swapped-probe", "torch", 2.0, 1.0), ("strict-onnx", "onnxruntime", 1.0, 1.0))
    for name, runtime, ms, mb in cells:
        store_profiles(st, st.get_model(name), runtime, 1, [Timing(1, ms, ms * 1.2, 1000 / ms, 100.0, mb, 5)],
                       device="edge-box")


def test_selection_ranks_by_validation_metric_under_the_budget(st: Store) -> None:
    _edge_profiles(st)
    sel = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=50, device="edge-box", threads=1)
    by_name = {c.model.name: c for c in sel.candidates}
    good, bad = by_name["blobs-probe"].metric, by_name["swapped-probe"].metric
    assert good is not None and bad is not None and good > bad  # trained on swapped labels: worse on blobs
    assert st.get_model("swapped-probe").metrics["val@blobs@1"]["auroc"] == bad  # cached in the registry
    # equal AUROC (same weights): the faster ONNX child wins; the failed-parity child is excluded
    assert sel.chosen is not None and sel.chosen.model.name == "blobs-probe-onnx"
    assert by_name["blobs-probe"].status == "fits"
    assert "not deployable" in by_name["strict-onnx"].reason and by_name["strict-onnx"].status == "excluded"
    assert "lite0-64" not in by_name  # candidates are L2s (and their children) only
    tight = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=4, device="edge-box", threads=1)
    assert tight.chosen is not None and tight.chosen.model.name == "swapped-probe"
    assert {c.model.name: c.reason for c in tight.candidates}["blobs-probe-onnx"] == "p50 5.0 ms > 4 ms"
    sized = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=50, max_size_mb=10,
                         device="edge-box", threads=1)
    assert sized.chosen is not None and sized.chosen.model.name == "swapped-probe"
    assert "size 13.5 MB > 10 MB" in {c.model.name: c.reason for c in sized.candidates}["blobs-probe-onnx"]
    only_torch = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=50, device="edge-box",
                              runtime="torch", threads=1)
    assert only_torch.chosen is not None and only_torch.chosen.model.name == "blobs-probe"
    reasons = {c.model.name: c.reason for c in only_torch.candidates}
    assert reasons["blobs-probe-onnx"] == "runs on onnxruntime, not torch"


def test_nothing_fits_names_the_fastest(st: Store) -> None:
    _edge_profiles(st)
    sel = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=1.5, device="edge-box", threads=1)
    assert sel.chosen is None
    assert "the fastest, swapped-probe:1 (torch), takes 2.0 ms" in sel.nothing_fits()
    other = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=50, device="other-box", threads=1)
    assert other.chosen is None and all("no latency profile on other-box" in c.reason
                                        for c in other.candidates if "not deployable" not in c.reason)
    with pytest.raises(NotFoundError, match="no registered L2 model of task 'text-classification'"):
        select_model(st, task="text-classification", data="blobs@1", max_latency_ms=10)
    with pytest.raises(ConfigError, match="runtime: unknown 'tvm'"):
        select_model(st, task="image-defect", data="blobs@1", max_latency_ms=10, runtime="tvm")
    assert issubclass(BudgetError, ConfigError)


def test_selection_profiles_missing_ones_on_this_machine(st: Store) -> None:
    sel = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=60_000, runtime="onnxruntime",
                       threads=1, repeats=2)
    assert sel.device == device_label() and sel.chosen is not None
    assert sel.chosen.model.name == "blobs-probe-onnx"
    assert stored_profiles(st, sel.chosen.model.id, device=device_label(), batch=1, threads=1)


def test_extract_child_is_a_candidate(st: Store) -> None:
    child = extract(st, "blobs-probe-onnx", "quantize", {"samples": 4}).model
    sel = select_model(st, task="image-defect", data="blobs@1", max_latency_ms=60_000, runtime="onnxruntime",
                       threads=1, repeats=2)
    assert child.id in {c.model.id for c in sel.candidates}
