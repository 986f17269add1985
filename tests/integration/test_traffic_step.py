"""The ``field-traffic`` step on tiny real L2s: a real uvicorn server on loopback, real HTTP predictions and
inspector feedback, the deployment stopped with its counters, then ``ingest-feedback`` builds the next
dataset version; bad input (an unservable model, an empty split, other classes) fails the step with one line."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from modelfab.compress.export import export_model
from modelfab.core.errors import ConfigError
from modelfab.data import import_image_folder
from modelfab.flow import run_pipeline
from modelfab.flow.engine import RunSummary
from modelfab.flow.spec import load_spec_text
from modelfab.flow.steps.traffic import choose_corrections
from modelfab.flow.validate import validate
from modelfab.serve.auth import list_keys
from modelfab.serve.runtime import plan_model
from modelfab.store.models import set_alias
from modelfab.store.schema import Deployment, Feedback, Prediction
from modelfab.store.store import Store
from tests.compress_fixtures import compress_store, one_thread, write_few


@dataclass
class Built:
    store: Store
    unservable: str  # an ONNX child whose export parity failed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """``blobs`` + ``blobs-probe`` (as ``blobs-probe@production``), ``blobs-swapped`` + ``swapped-probe`` (wrong on
    ``blobs``), ``blobs-hidden`` (imported --unlabeled), ``few`` (no val items), ``other`` (classes bad / good) and
    a failed-parity export."""
    tmp = tmp_path_factory.mktemp("traffic")
    with one_thread():
        store = compress_store(tmp / "home", tmp, swapped=True)
        set_alias(store, "blobs-probe", "production")
        import_image_folder(store, write_few(tmp / "few"), "few")
        import_image_folder(store, tmp / "blobs", "blobs-hidden", unlabeled=True)  # truth in hidden labels only
        other = tmp / "other"
        shutil.copytree(tmp / "few" / "ok", other / "good")
        shutil.copytree(tmp / "few" / "ng", other / "bad")
        import_image_folder(store, other, "other")
        failed = export_model(store, "blobs-probe", "onnx", tolerance=0.0, name="zero-tol")
        assert not failed.passed
        try:
            yield Built(store, failed.model.id)
        finally:
            store.close()


def run(store: Store, text: str) -> RunSummary:
    return run_pipeline(store, validate(load_spec_text(text), store))


def deployment(store: Store, dep_id: str) -> Deployment:
    with store.session() as s:
        dep = s.get(Deployment, dep_id)
        assert dep is not None
        return dep


def predictions(store: Store, dep_id: str) -> int:
    with store.session() as s:
        query = select(func.count()).select_from(Prediction).where(Prediction.deployment_id == dep_id)
        return int(s.scalar(query) or 0)


def corrections(store: Store, dep_id: str) -> list[Feedback]:
    with store.session() as s:
        return list(s.scalars(select(Feedback).where(Feedback.deployment_id == dep_id,
                                                     Feedback.kind == "correction")).all())


FEEDBACK_LOOP = """\
name: field-loop
steps:
  deploy:
    uses: deploy
    with: {model: swapped-probe}
  traffic:
    uses: field-traffic
    with: {model: "${{ steps.deploy.outputs.model }}", data: "blobs@1", requests: 12, concurrency: 3, seed: 1}
  ingest:
    uses: ingest-feedback
    with: {deployment: "${{ steps.traffic.outputs.deployment }}"}
"""


def test_traffic_corrections_feed_the_next_dataset_version(built: Built) -> None:
    store = built.store
    with one_thread():
        summary = run(store, FEEDBACK_LOOP)
    assert summary.status == "succeeded", {n: r.error for n, r in summary.steps.items()}
    out = summary.steps["traffic"].outputs
    assert set(out) == {"deployment", "requests", "accuracy", "corrections"}
    assert out["requests"] == 12 and 0.0 <= out["accuracy"] < 0.5  # trained on swapped labels
    wrong = round((1 - out["accuracy"]) * 12)
    assert wrong > 0 and out["corrections"] == wrong  # correct_fraction 1.0: every wrong answer corrected
    dep_id = out["deployment"]
    assert dep_id != summary.steps["deploy"].outputs["deployment"]  # the session's own deployment
    dep = deployment(store, dep_id)
    assert dep.status == "stopped" and dep.model_id == store.get_model("swapped-probe").id
    assert dep.counters["predictions"] == 12 and dep.counters["requests"] == 12
    assert dep.counters["feedback"] == wrong
    rows = corrections(store, dep_id)
    assert predictions(store, dep_id) == 12 and len(rows) == wrong
    assert all(r.correction and r.correction["label"] != r.prediction["label"] for r in rows)
    assert all(k.revoked_at is not None for k in list_keys(store))  # the temporary key is gone
    ingest = summary.steps["ingest"].outputs
    hashes = {r.input_hash for r in rows}
    assert ingest["dataset"] == "blobs-swapped@2" and ingest["added"] == len(hashes)  # blobs images are new there
    v2 = store.get_dataset_version("blobs-swapped@2")
    assert len(store.version_items(v2.id)) == 40 + len(hashes)


TWO_LINES = """\
name: field-lines
steps:
  good:
    uses: field-traffic
    with: {model: blobs-probe@production, data: "blobs@1:test", requests: 8, concurrency: 2}
  half:
    uses: field-traffic
    with: {model: swapped-probe, data: "blobs@1:val", requests: 10, correct_fraction: 0.5, seed: 7}
  hidden:
    uses: field-traffic
    with: {model: blobs-probe, data: "blobs-hidden@1", requests: 6, concurrency: 1, correct_fraction: 0.0}
"""


def test_alias_ref_and_partial_corrections(built: Built) -> None:
    store = built.store
    with one_thread():
        summary = run(store, TWO_LINES)
    assert summary.status == "succeeded", {n: r.error for n, r in summary.steps.items()}
    good = summary.steps["good"].outputs
    assert good["requests"] == 8 and good["accuracy"] >= 0.75
    assert good["corrections"] == round((1 - good["accuracy"]) * 8)
    dep = deployment(store, good["deployment"])
    assert dep.status == "stopped" and dep.counters["ref"] == "blobs-probe@production"
    assert dep.counters["predictions"] == 8
    half = summary.steps["half"].outputs
    wrong = round((1 - half["accuracy"]) * 10)
    assert half["requests"] == 10 and wrong > 0 and half["corrections"] == round(0.5 * wrong)
    assert deployment(store, half["deployment"]).counters.get("feedback", 0) == half["corrections"]
    assert len(corrections(store, half["deployment"])) == half["corrections"]
    hidden = summary.steps["hidden"].outputs  # ground truth read from the hidden labels
    assert hidden["requests"] == 6 and hidden["accuracy"] >= 0.75 and hidden["corrections"] == 0
    assert choose_corrections([4, 1, 9], 1.0, 3) == [1, 4, 9] and choose_corrections([4, 1, 9], 0.0, 3) == []
    picked = choose_corrections(list(range(10)), 0.5, 7)
    assert picked == choose_corrections(list(range(10)), 0.5, 7) and len(picked) == 5


def single(model: str, data: str) -> str:
    return (f"name: bad\nsteps:\n  traffic:\n    uses: field-traffic\n"
            f"    with: {{model: \"{model}\", data: \"{data}\", requests: 2}}\n")


def test_bad_input_fails_the_step_with_one_line(built: Built) -> None:
    store = built.store
    with pytest.raises(ConfigError) as served:
        plan_model(store, built.unservable)
    assert "parity" in str(served.value)
    with store.session() as s:
        before = int(s.scalar(select(func.count()).select_from(Deployment)) or 0)
    cases = (
        (single(built.unservable, "blobs@1"), str(served.value)),
        (single("blobs-probe", "few@1:val"), "few@1: no labelled items in split 'val'"),
        (single("blobs-probe", "other@1"),
         "other@1 task label has classes ['bad', 'good']; the model has ['ng', 'ok']"),
        (single("blobs-probe", "blobs@1:nosplit"), "unknown split 'nosplit'"),
    )
    for text, message in cases:
        summary = run(store, text)
        step = summary.steps["traffic"]
        assert summary.status == "failed" and step.status == "failed", step.error
        assert step.error is not None and message in step.error and "\n" not in step.error, step.error
    with store.session() as s:
        assert int(s.scalar(select(func.count()).select_from(Deployment)) or 0) == before  # no server started
