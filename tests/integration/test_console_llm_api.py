"""The console's language-model routes on a real uvicorn server over a real registry (a tiny ChatML causal LM,
an SFT dataset rendered from a template, a ranking dataset with 3 sampled candidates per prompt assigned to
four annotators): template preview with every kind of problem, broken templates as 4xx, rendering an SFT
version (403 for a viewer), an annotator's ranking tasks, rankings saved through the library's import
(ties and unknown candidates refused), and the agreement table."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from modelfab.llm.agreement import kendall_tau
from modelfab.llm.formats import chat_messages
from modelfab.llm.ranking import load_ranking
from modelfab.store.datasets import get_version, version_items
from tests.console_fixtures import ROWS, TEMPLATE, Live, import_for, live_console, prepare_llm

HTTP = httpx.Client(timeout=120)
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prepared = prepare_llm(tmp_path_factory.mktemp("console-llm"))
    with live_console(prepared) as server:
        yield server


def api(live: Live, path: str) -> str:
    return f"{live.url}/api/console/llm{path}"


def error(r: httpx.Response, status: int, code: str | None = None) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert code is None or body["error"]["code"] == code, body
    return str(body["error"]["message"])


def preview(live: Live, role: str = "viewer", **body: object) -> httpx.Response:
    return HTTP.post(api(live, "/template/preview"), json={"template": TEMPLATE, "table": ROWS, **body},
                     headers=live.h(role))


def test_sign_in_is_required(live: Live) -> None:
    for method, path in (("GET", "/models"), ("POST", "/template/preview"), ("POST", "/template/render"),
                         ("GET", "/ranking/datasets"), ("GET", "/ranking/rk/tasks"),
                         ("POST", "/ranking/rk/rankings"), ("GET", "/ranking/rk/agreement")):
        error(HTTP.request(method, api(live, path), json={}), 401, "unauthorized")


def test_models_lists_the_causal_lm(live: Live) -> None:
    models = HTTP.get(api(live, "/models"), headers=live.h("viewer")).json()["models"]
    assert [(m["ref"], m["tier"]) for m in models] == [("tinychat:1", "L0")]


def test_preview_renders_with_the_chat_template(live: Live) -> None:
    r = preview(live, model="tinychat:1", n=2)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["rows"], out["valid"], out["problems"], out["format"]) == (6, 6, [], "csv")
    assert out["variables"] == ["action", "answer", "service"] and out["missing_columns"] == []
    assert out["token_count"] == "chat template" and out["limit_reason"] == "context of tinychat:1"
    first = out["samples"][0]
    assert len(out["samples"]) == 2 and first["where"] == "row 1" and first["tokens"] > 10
    assert first["messages"][1] == {"role": "user", "content": "How do I renew a parking permit?"}
    assert "<|im_start|>assistant\nBring the old permit and pay the fee.<|im_end|>" in first["rendered"]
    estimate = preview(live, n=0).json()  # without a model: whitespace words
    assert estimate["samples"] == [] and estimate["token_count"].startswith("estimate")
    jsonl = "\n".join(json.dumps({"action": "renew", "service": s, "answer": "Fill in the form."})
                      for s in ("permit", "licence")) + "\n"
    out = preview(live, table=jsonl).json()  # JSONL recognised by its first character
    assert (out["format"], out["valid"]) == ("jsonl", 2)
    assert not list((live.prepared.home / "console" / "templates").glob("preview-*"))  # nothing left behind


def test_preview_lists_every_problem(live: Live) -> None:
    table = ROWS + "renew,parking permit,Bring the old permit and pay the fee.\n" + ",visa,Apply online.\n"
    template = TEMPLATE.replace("{{ service }}?", "{{ service }} in {{ city }}?")
    out = preview(live, template=template, table=table).json()
    assert out["missing_columns"] == ["city"] and out["valid"] == 0
    assert out["counts"] == {"undefined": 8}
    assert out["problems"][0] == {"kind": "undefined", "where": "row 1", "key": "row-0000001",
                                  "message": "undefined variable 'city'"}
    out = preview(live, table=table, model="tinychat:1", max_tokens=40).json()
    assert out["counts"]["duplicate"] == 1 and out["limit"] == 40
    dup = next(p for p in out["problems"] if p["kind"] == "duplicate")
    assert dup == {"kind": "duplicate", "where": "row 7", "key": "row-0000007", "message": "duplicate of row 1"}
    long = [p for p in out["problems"] if p["kind"] == "too-long"]
    assert long and all(p["message"].endswith("tokens, over the limit of 40 (max tokens)") for p in long)


@pytest.mark.parametrize(("template", "table", "fragment"), [
    ("user: [unclosed\n", ROWS, "template.yaml: invalid YAML/JSON at line 2"),
    ("user: How do I {{ action }?\n", ROWS, "template.yaml: 'user' template, line 1: unexpected '}'"),
    ("user: hi\nprompt: x\n", ROWS, "unknown keys ['prompt']"),
    ("- just a list\n", ROWS, "expected a mapping with 'user'"),
    (TEMPLATE, "  \n", "table: paste or upload a CSV or JSONL table"),
    (TEMPLATE, '{"action": "renew"\n', "rows.jsonl:1: invalid JSON"),
])
def test_broken_template_or_table_is_a_422(live: Live, template: str, table: str, fragment: str) -> None:
    message = error(preview(live, template=template, table=table), 422)
    assert fragment in message and str(live.prepared.home) not in message, message


def test_preview_bad_requests(live: Live) -> None:
    assert "unknown model 'nope'" in error(preview(live, model="nope"), 404, "not_found")
    error(preview(live, n=-1), 422, "invalid_request")
    error(preview(live, template="x" * 70_000), 422, "invalid_request")


def test_render_makes_an_sft_version(live: Live) -> None:
    body = {"template": TEMPLATE, "table": ROWS, "model": "tinychat:1", "name": "permits-sft"}
    url = api(live, "/template/render")
    assert "needs annotator" in error(HTTP.post(url, json=body, headers=live.h("viewer")), 403, "forbidden")
    error(HTTP.post(url, json={**body, "name": "bad name"}, headers=live.h("annotator")), 422, "invalid_request")
    bad = {**body, "table": ROWS + "renew,passport,\n"}  # empty assistant answer
    message = error(HTTP.post(url, json=bad, headers=live.h("annotator")), 422)
    assert message.startswith("1 of 7 rows invalid (1 empty); first: row 7: rendered 'assistant' is empty"), message
    r = HTTP.post(url, json=body, headers=live.h("annotator"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["dataset"], out["created"], out["items"], out["skipped"]) == ("permits-sft@1", True, 6, [])
    assert out["by"].startswith("ann (") and out["tokens"]["max"] > 10
    skipped = HTTP.post(url, json={**bad, "skip_invalid": True}, headers=live.h("annotator")).json()
    assert skipped["dataset"] == "permits-sft@1" and not skipped["created"]  # same 6 samples: same version
    assert [p["where"] for p in skipped["skipped"]] == ["row 7"]
    st = live.store()
    try:
        dv = get_version(st, "permits-sft@1")
        rows = version_items(st, dv.id)
        assert dv.dataset.modality == "chat" and dv.label_schema["model"] == "tinychat:1"
        assert chat_messages(rows[0].text)[-1] == {"role": "assistant",
                                                   "content": "Bring the old permit and pay the fee."}
    finally:
        st.close()
    kept = sorted((live.prepared.home / "console" / "templates").glob("permits-sft-*/permits-sft.yaml"))
    assert len(kept) == 2 and kept[0].read_text() == TEMPLATE  # the record; failed renders leave nothing


def test_ranking_datasets_and_tasks(live: Live) -> None:
    sets = HTTP.get(api(live, "/ranking/datasets"), headers=live.h("viewer")).json()["datasets"]
    assert [(d["name"], d["items"]) for d in sets] == [("rk", 6)]
    tasks = HTTP.get(api(live, "/ranking/rk/tasks"), headers=live.h("annotator")).json()
    assert tasks["annotator"] == "ann" and tasks["assigned"] and tasks["total"] == 3
    st = live.store()
    try:
        assigned = load_ranking(st, "rk").assignments["ann"]
    finally:
        st.close()
    assert [t["key"] for t in tasks["items"]] == assigned
    first = tasks["items"][0]
    assert sorted(c["id"] for c in first["candidates"]) == ["c0", "c1", "c2"] and first["ranked"] is None
    assert first["prompt"][-1]["role"] == "user" and "reference" not in first
    every = HTTP.get(api(live, "/ranking/rk/tasks?version=1"), headers=live.h("viewer")).json()
    assert every["dataset"] == "rk@1" and not every["assigned"] and every["total"] == 6  # no assignments: all
    message = error(HTTP.get(api(live, "/ranking/rk/tasks"), headers=live.h("viewer")), 404, "not_found")
    assert "annotator 'viewer-test' has no assignments in rk@2" in message
    error(HTTP.get(api(live, "/ranking/prompts/tasks"), headers=live.h("annotator")), 422)  # a chat dataset


def test_submit_rankings_and_agreement(live: Live) -> None:
    url = api(live, "/ranking/rk/rankings")
    tasks = HTTP.get(api(live, "/ranking/rk/tasks"), headers=live.h("annotator")).json()["items"]
    mine = {t["key"]: [c["id"] for c in t["candidates"]] for t in tasks}  # as shown: first is best
    message = error(HTTP.post(url, json={"rankings": mine}, headers=live.h("viewer")), 403, "forbidden")
    assert "may not submit rankings" in message
    first = next(iter(mine))
    bad = {**mine, first: ["c0", "c0", "c1"], "row-9999999": ["c0", "c1", "c2"]}
    message = error(HTTP.post(url, json={"rankings": bad}, headers=live.h("annotator")), 422)
    assert message.startswith("2 problems in the rankings:") and "tie: candidate 'c0' appears 2 times" in message
    assert "unknown item key 'row-9999999'" in message and str(live.prepared.home) not in message
    other = next(k for k in ("row-0000001", "row-0000002", "row-0000003", "row-0000004", "row-0000005")
                 if k not in mine)
    message = error(HTTP.post(url, json={"rankings": {other: ["c0", "c1", "c2"]}}, headers=live.h("annotator")), 422)
    assert f"item {other!r} is not assigned to annotator 'ann'" in message
    unknown = {first: ["c0", "c1", "c9"]}
    assert "unknown candidates c9" in error(HTTP.post(url, json={"rankings": unknown}, headers=live.h("annotator")),
                                            422)
    agreement = api(live, "/ranking/rk/agreement")
    assert "at least two human annotators" in error(HTTP.get(agreement, headers=live.h("viewer")), 422)

    r = HTTP.post(url, json={"rankings": mine, "annotator": "bob"}, headers=live.h("annotator"))  # name: the key's
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["dataset"], out["parent"], out["rankings"], out["field"]) == ("rk@3", "rk@2", 3, "rank:ann")
    st = live.store()
    try:
        assert get_version(st, "rk@3").parent_id == get_version(st, "rk@2").id
        saved = {r.key: r.labels["rank:ann"] for r in version_items(st, "rk@3") if "rank:ann" in r.labels}
    finally:
        st.close()
    assert saved == mine
    again = HTTP.get(api(live, "/ranking/rk/tasks"), headers=live.h("annotator")).json()
    assert again["dataset"] == "rk@3" and again["done"] == 3 and again["items"][0]["ranked"] == mine[first]

    assert import_for(live, "bob") == "rk@4"  # a second annotator, through the library
    info = HTTP.get(agreement, headers=live.h("viewer")).json()
    assert info["dataset"] == "rk@4" and info["rankers"] == {"ann": "human", "bob": "human"}
    (pair,) = info["pairs"]
    assert (pair["a"], pair["b"], pair["items"]) == ("ann", "bob", 1)
    shared = next(k for k in mine if k in {i["key"] for i in info["items"] if len(i["annotators"]) == 2})
    assert pair["kendall_tau"] == pytest.approx(kendall_tau(mine[shared], ["c0", "c1", "c2"]))
    assert pair["pairwise"] == pytest.approx((pair["kendall_tau"] + 1) / 2)
    # bob submits on top of the newest version: ann's rankings stay
    bob = HTTP.get(api(live, "/ranking/rk/tasks"), headers=live.h("bob")).json()
    flipped = {t["key"]: t["ranked"][::-1] for t in bob["items"]}
    out = HTTP.post(url, json={"rankings": flipped}, headers=live.h("bob")).json()
    assert (out["dataset"], out["parent"]) == ("rk@5", "rk@4")
    st = live.store()
    try:
        labels = {r.key: r.labels for r in version_items(st, "rk@5")}
    finally:
        st.close()
    assert {k: labels[k]["rank:ann"] for k in mine} == mine
    assert {k: labels[k]["rank:bob"] for k in flipped} == flipped


def test_without_sign_in_the_annotator_is_named_in_the_request(live: Live) -> None:
    from fastapi.testclient import TestClient

    from modelfab.console import console_app

    st = live.store()
    try:
        with TestClient(console_app(st, auth=False)) as client:
            tasks = client.get("/api/console/llm/ranking/rk/tasks", params={"version": 1, "annotator": "zed"}).json()
            assert (tasks["annotator"], tasks["total"], tasks["assigned"]) == ("zed", 6, False)
            assert client.get("/api/console/llm/ranking/rk/tasks?version=1").json()["annotator"] == "console"
            bad = client.get("/api/console/llm/ranking/rk/tasks", params={"version": 1, "annotator": "a b"})
            assert bad.status_code == 400 and "cannot be an annotator name" in bad.json()["error"]["message"]
    finally:
        st.close()
