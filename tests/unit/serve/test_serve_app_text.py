"""The app in-process (TestClient) with a text L2: text predictions, modality checks, no-auth mode."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelfab.serve import ServeSettings, create_app
from modelfab.store.schema import Deployment
from modelfab.tune import TuneConfig, tune
from tests.tune_fixtures import tiny_text_store


def test_text_model_in_process(tmp_path: Path) -> None:
    st = tiny_text_store(tmp_path / "home", tmp_path)
    model = tune(st, base="tiny-bert", data="reviews", name="rev", cfg=TuneConfig(method="probe")).model
    app = create_app(ServeSettings(auth=False, low_confidence=0.0), ["rev"], store=st)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = client.post("/v1/models/rev:predict", json={"inputs": [{"text": "good product 1"}, {"text": "bad 2"}]})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["model_id"] for p in preds] == [model.id] * 2 and all(p["label"] in ("neg", "pos") for p in preds)
        bad = client.post("/v1/models/rev:predict", files=[("files", ("a.png", b"\x89PNG", "image/png"))])
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "wrong_modality"
        assert client.get("/v1/models").json()["models"][0]["modality"] == "text"  # no key needed: auth off
        dep_id = client.get("/v1/models").json()["models"][0]["deployment_id"]
        assert gc.get_freeze_count() > 0  # gc_freeze: the loaded objects left the collector's scans
    assert gc.get_freeze_count() == 0  # and came back when the in-process server stopped
    with st.session() as s:
        dep = s.get(Deployment, dep_id)
        assert dep is not None and dep.status == "stopped" and dep.counters["predictions"] == 2
    st.close()


def test_unknown_model_fails_at_creation(tmp_path: Path) -> None:
    from modelfab.core.errors import NotFoundError

    st = tiny_text_store(tmp_path / "home", tmp_path)
    with pytest.raises(NotFoundError):
        create_app(ServeSettings(), ["nope"], store=st)
    st.close()
