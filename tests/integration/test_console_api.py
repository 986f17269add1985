"""The console's JSON API on a real uvicorn server (in a thread) over a real registry: sign-in and roles,
the lineage and model cards, promotion (403 for an annotator), datasets with diffs, thumbnails and text,
labels saved as a new version, the report file route refusing path traversal, and a pipeline run
approved at its gate that then continues (a real `modelfab runs resume` process)."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from modelfab.store.datasets import get_version, version_items
from modelfab.store.runs import list_runs
from tests.console_fixtures import Live, live_console, prepare, start_gate_run

HTTP = httpx.Client(timeout=60)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("console")
    prepared = prepare(root)
    bench = root / "bench-results"
    bench.mkdir()
    Image.new("RGB", (40, 20), "white").save(bench / "speed.png")
    (bench / "speed.json").write_text("{}")
    with live_console(prepared, bench_dir=bench) as server:
        yield server


def api(live: Live, path: str) -> str:
    return f"{live.url}/api/console{path}"


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
    return str(body["error"]["message"])


def test_sign_in_is_required(live: Live) -> None:
    error(HTTP.get(api(live, "/models")), 401, "unauthorized")
    error(HTTP.get(api(live, "/models"), headers={"Authorization": "Bearer mfk_nope_wrong"}), 401, "unauthorized")
    error(HTTP.get(api(live, "/datasets"), headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    me = HTTP.get(api(live, "/whoami"), headers=live.h("viewer")).json()
    assert me["role"] == "viewer" and me["name"] == "viewer-test"
    page = HTTP.get(f"{live.url}/console/")
    assert page.status_code == 200 and "modelfab console" in page.text and "https://" not in page.text
    assert HTTP.get(f"{live.url}/console/app.js").headers["content-type"].startswith("text/javascript")
    assert HTTP.get(f"{live.url}/", follow_redirects=False).headers["location"] == "/console/"


def test_lineage_card_and_compare(live: Live) -> None:
    tree = HTTP.get(api(live, "/models"), headers=live.h("viewer")).json()["tree"]
    assert [n["name"] for n in tree] == ["lite0-64"]
    l1 = tree[0]["children"][0]
    assert (l1["name"], l1["tier"]) == ("cells-l1", "L1") and l1["dataset"] == "blobs@1"
    l2 = l1["children"][0]
    assert (l2["name"], l2["tier"]) == ("cell-a", "L2")
    card = HTTP.get(api(live, f"/models/{l2['id']}"), headers=live.h("viewer")).json()
    assert card["parent_name"] == "cells-l1:1" and "val.auroc" in card["metrics_flat"]
    assert card["parity"]["deployable"] is True and card["card"]["tier"] == "L2"
    assert card["profiles"] == []
    cmp = HTTP.get(api(live, "/compare"), params={"a": "cell-a", "b": "lite0-64"}, headers=live.h("viewer")).json()
    rows = {r["metric"]: r for r in cmp["rows"]}
    assert rows["tier"]["a"] == "L2" and rows["tier"]["b"] == "L0"
    assert rows["val.auroc"]["a"] is not None and rows["val.auroc"]["b"] is None
    error(HTTP.get(api(live, "/models/no-such-model"), headers=live.h("viewer")), 404, "not_found")


def test_promote_needs_engineer(live: Live) -> None:
    url = api(live, "/models/cell-a/promote")
    msg = error(HTTP.post(url, json={"alias": "production"}, headers=live.h("annotator")), 403, "forbidden")
    assert "annotator" in msg and "engineer" in msg
    error(HTTP.post(url, json={"alias": "production"}, headers=live.h("viewer")), 403, "forbidden")
    st = live.store()
    try:
        with pytest.raises(Exception, match="unknown model"):
            st.get_model("cell-a@production")
        error(HTTP.post(url, json={"alias": "bad alias!"}, headers=live.h("engineer")), 422, "invalid_request")
        res = HTTP.post(url, json={"alias": "production"}, headers=live.h("engineer"))
        assert res.status_code == 200, res.text
        assert res.json()["alias"] == "cell-a@production" and "engineer-test" in res.json()["by"]
        assert st.get_model("cell-a@production").name == "cell-a"
        promo = list_runs(st, "promote")[0]
        assert promo.config["by"].startswith("engineer-test") and promo.status == "succeeded"
    finally:
        st.close()
    tree = HTTP.get(api(live, "/models"), headers=live.h("viewer")).json()["tree"]
    assert "cell-a@production" in tree[0]["children"][0]["children"][0]["aliases"]


def test_datasets_versions_gallery_and_text(live: Live) -> None:
    names = {d["name"]: d for d in HTTP.get(api(live, "/datasets"), headers=live.h("viewer")).json()["datasets"]}
    assert names["blobs"]["modality"] == "image" and names["reviews"]["modality"] == "text"
    v = HTTP.get(api(live, "/datasets/blobs/versions/1"), headers=live.h("viewer")).json()
    assert v["distribution"]["label"]["counts"] == {"ng": 20, "ok": 20} and v["diff"] is None
    page = HTTP.get(api(live, "/datasets/blobs/versions/1/items"), params={"limit": 5},
                    headers=live.h("viewer")).json()
    assert page["total"] == 40 and len(page["items"]) == 5 and page["order"] == "key"
    digest = page["items"][0]["image"]
    thumb = HTTP.get(api(live, f"/thumbs/{digest}"), params={"size": 32}, headers=live.h("viewer"))
    assert thumb.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 32
    error(HTTP.get(api(live, f"/thumbs/{digest}")), 401, "unauthorized")
    st = live.store()
    try:  # an artifact that is not an image item (the model's weights) is never served
        weights = st.get_model("lite0-64").weights_digest
    finally:
        st.close()
    error(HTTP.get(api(live, f"/thumbs/{weights}"), headers=live.h("viewer")), 404, "not_found")
    texts = HTTP.get(api(live, "/datasets/reviews/versions/1/items"), headers=live.h("viewer")).json()
    assert texts["modality"] == "text" and texts["items"][0]["text"] and texts["items"][0]["image"] is None


def test_labels_make_a_new_version(live: Live) -> None:
    queue = HTTP.get(api(live, "/datasets/pool/versions/1/items"), params={"unlabeled": "label", "limit": 100},
                     headers=live.h("annotator")).json()["items"]
    assert len(queue) == 12
    labels = {it["key"]: it["key"].split("/")[0] for it in queue[:10]}
    url = api(live, "/datasets/pool/versions/1/labels")
    error(HTTP.post(url, json={"field": "label", "labels": labels}, headers=live.h("viewer")), 403, "forbidden")
    error(HTTP.post(url, json={"field": "label", "labels": {"no/such.png": "ok"}}, headers=live.h("annotator")),
          422, "invalid_input")
    error(HTTP.post(url, json={"field": "label", "labels": {}}, headers=live.h("annotator")), 422, "invalid_request")
    res = HTTP.post(url, json={"field": "label", "labels": labels}, headers=live.h("annotator"))
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["dataset"] == "pool@2" and body["created"] and body["parent"] == "pool@1"
    st = live.store()
    try:
        dv = get_version(st, "pool@2")
        assert dv.parent_id == get_version(st, "pool@1").id and "annotator-test" in dv.message
        got = {r.key: r.labels.get("label") for r in version_items(st, "pool@2")}
        assert {k: got[k] for k in labels} == labels and sum(v is not None for v in got.values()) == 10
    finally:
        st.close()
    v2 = HTTP.get(api(live, "/datasets/pool/versions/2"), headers=live.h("viewer")).json()
    assert v2["parent"] == "pool@1" and v2["diff"]["counts"] == {"added": 0, "removed": 0, "replaced": 0,
                                                                 "relabelled": 10}
    assert v2["distribution"]["label"]["missing"] == 2
    left = HTTP.get(api(live, "/datasets/pool/versions/2/items"), params={"unlabeled": "label"},
                    headers=live.h("viewer")).json()
    assert left["total"] == 2
    versions = HTTP.get(api(live, "/datasets/pool/versions"), headers=live.h("viewer")).json()["versions"]
    assert [(x["version"], x["parent"]) for x in versions] == [(1, None), (2, "pool@1")]


def test_report_files_no_traversal(live: Live) -> None:
    home = live.prepared.home
    folder = home / "reports" / "m-123" / "blobs-v1-test"
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("<html><body><h1>report</h1></body></html>")
    Image.new("RGB", (10, 10)).save(folder / "roc.png")
    (home / "reports" / "escape.png").symlink_to(home / "modelfab.db")
    listing = HTTP.get(api(live, "/reports"), headers=live.h("viewer")).json()
    ev = listing["evaluations"][0]
    assert ev["html"] == "reports/m-123/blobs-v1-test/report.html" and ev["plots"] == [
        "reports/m-123/blobs-v1-test/roc.png"]
    assert listing["bench"] == [{"name": "speed", "png": "bench/speed.png", "json": "bench/speed.json"}]
    html = HTTP.get(api(live, f"/files/{ev['html']}"), headers=live.h("viewer"))
    assert html.status_code == 200 and "<h1>report</h1>" in html.text
    assert "sandbox" in html.headers["content-security-policy"]
    assert HTTP.get(api(live, "/files/bench/speed.png"), headers=live.h("viewer")).status_code == 200
    error(HTTP.get(api(live, f"/files/{ev['html']}")), 401, "unauthorized")
    for bad in ("reports/%2e%2e/modelfab.db", "reports/..%2fmodelfab.db", "reports/%2fetc%2fpasswd",
                "reports/escape.png", "reports/m-123/%2e%2e/%2e%2e/modelfab.db", "bench/%2e%2e/home/modelfab.db",
                "nowhere/x.png", "reports/m-123/blobs-v1-test"):
        r = HTTP.get(api(live, "/files/") + bad, headers=live.h("viewer"))
        msg = error(r, 404, "not_found")  # refused by the route itself, not by URL routing
        assert "no report file" in msg or "unknown report root" in msg, (bad, msg)


def _first_event(live: Live, run_id: str) -> dict[str, object]:
    with HTTP.stream("GET", api(live, f"/runs/{run_id}/events"), headers=live.h("viewer")) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines: list[str] = []
        for line in resp.iter_lines():
            if line == "" and lines:
                break
            lines.append(line)
    assert lines[0] == "event: state"
    return dict(json.loads(lines[1].removeprefix("data: ")))


def test_run_waits_at_gate_then_continues_after_approval(live: Live) -> None:
    run_id = start_gate_run(live.prepared)
    runs = HTTP.get(api(live, "/runs"), params={"kind": "pipeline"}, headers=live.h("viewer")).json()["runs"]
    assert runs[0]["id"] == run_id and runs[0]["status"] == "waiting" and runs[0]["pipeline"] == "console-gate"
    detail = HTTP.get(api(live, f"/runs/{run_id}"), headers=live.h("viewer")).json()
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["approve"]["status"] == "waiting" and steps["approve"]["needs"] == ["data"]
    assert steps["after"]["needs"] == ["approve"] and "console-gate" in detail["spec"]
    state = _first_event(live, run_id)
    assert state["status"] == "waiting"
    logs = HTTP.get(api(live, f"/runs/{run_id}/logs"), headers=live.h("viewer")).json()["logs"]
    assert "done" in logs["data"]
    url = api(live, f"/runs/{run_id}/approve")
    error(HTTP.post(url, json={"step": "approve"}, headers=live.h("annotator")), 403, "forbidden")
    error(HTTP.post(url, json={"step": "data"}, headers=live.h("engineer")), 400, "invalid_request")
    res = HTTP.post(url, json={"step": "approve", "comment": "ok from test"}, headers=live.h("engineer"))
    assert res.status_code == 200, res.text
    assert res.json()["resumed_pid"] and res.json()["by"].startswith("engineer-test")
    deadline = time.monotonic() + 180
    while True:
        detail = HTTP.get(api(live, f"/runs/{run_id}"), headers=live.h("viewer")).json()
        if detail["status"] in ("succeeded", "failed"):
            break
        assert time.monotonic() < deadline, detail
        time.sleep(0.5)
    log = HTTP.get(api(live, f"/runs/{run_id}/logs"), headers=live.h("viewer")).json()["logs"]
    assert detail["status"] == "succeeded", log.get("console-resume")
    steps = {s["name"]: s for s in detail["steps"]}
    assert steps["after"]["status"] == "succeeded"
    decision = steps["approve"]["approval"]
    assert decision["approved"] and decision["by"].startswith("engineer-test") and decision["at"]
    error(HTTP.post(api(live, f"/runs/{run_id}/resume"), headers=live.h("engineer")), 409, "conflict")
    assert os.path.exists(live.prepared.home / "runs" / "pipelines" / run_id / "console-resume" / "log.txt")
    # Re-run: a new run of the same spec, driven by its own process; the data step comes from the cache
    # and the manual gate waits again (approvals are never cached).
    error(HTTP.post(api(live, f"/runs/{run_id}/rerun"), headers=live.h("annotator")), 403, "forbidden")
    res = HTTP.post(api(live, f"/runs/{run_id}/rerun"), headers=live.h("engineer"))
    assert res.status_code == 200, res.text
    new_id = res.json()["run"]
    assert new_id != run_id and res.json()["rerun_of"] == run_id
    deadline = time.monotonic() + 180
    while True:
        again = HTTP.get(api(live, f"/runs/{new_id}"), headers=live.h("viewer")).json()
        if again["status"] in ("waiting", "succeeded", "failed"):
            break
        assert time.monotonic() < deadline, again
        time.sleep(0.5)
    steps = {s["name"]: s for s in again["steps"]}
    assert again["status"] == "waiting" and steps["data"]["status"] == "cached", again


def test_screened_version_gallery_by_score_with_heatmaps(live: Live) -> None:
    from modelfab.data import import_image_folder
    from modelfab.screen.api import fit_screen, run_screen
    from tests.tune_fixtures import write_blobs

    root = live.prepared.root
    st = live.store()
    try:
        import_image_folder(st, write_blobs(root / "batch", per_class=6, seed=5), "batch", unlabeled=True)
        fit_screen(st, backbone="lite0-64", normal="blobs@1", split="train", name="blobs-knn",
                   config={"image_size": 64, "layers": ["block4", "block10"]})
        res = run_screen(st, model="blobs-knn", data="batch@1", calibration="blobs@1:train", target_recall=0.7,
                         confidence=0.9, heatmaps=root / "maps")
    finally:
        st.close()
    assert res.version_ref == "batch@2" and res.heatmaps
    v = HTTP.get(api(live, "/datasets/batch/versions/2"), headers=live.h("viewer")).json()
    assert v["scored"] and v["distribution"]["screen_score"]["kind"] == "numeric" and v["parent"] == "batch@1"
    assert v["diff"]["counts"]["removed"] == len(res.filtered)
    page = HTTP.get(api(live, "/datasets/batch/versions/2/items"), headers=live.h("viewer")).json()
    assert page["order"].startswith("screen score")
    scores = [it["score"] for it in page["items"]]
    assert scores == sorted(scores, reverse=True) and [it["key"] for it in page["items"]] == [k for k, _ in res.ranked]
    assert sum(it["heatmap"] for it in page["items"]) == len(res.heatmaps)
    top = page["items"][0]
    png = HTTP.get(api(live, f"/datasets/batch/versions/2/heatmaps/{top['rank']}"), headers=live.h("viewer"))
    assert png.status_code == 200 and png.content == res.heatmaps[0].read_bytes()
    error(HTTP.get(api(live, "/datasets/batch/versions/2/heatmaps/999"), headers=live.h("viewer")), 404, "not_found")
    error(HTTP.get(api(live, "/datasets/batch/versions/1/heatmaps/0"), headers=live.h("viewer")), 404, "not_found")
