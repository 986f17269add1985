"""`modelfab serve` with chat models, as a real uvicorn process on a loopback port: a tiny chat LM and two
LoRA chat L2s over it (one base copy), plus a tiny text encoder. OpenAI-compatible completions (plain and
streamed), per-request adapter switching against offline generation, errors, embeddings, metrics, and the
deployments marked stopped with their counters at shutdown."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import peft
import pytest
import torch

from modelfab.llm.models import load_base, load_chat_model, register_chat_model
from modelfab.serve.auth import create_key
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.zoo.registry import load_registered, register_foundation
from modelfab.zoo.testing import write_tiny_hf_model
from tests.helpers import free_port
from tests.llm_fixtures import register_tiny_chat
from tests.tune_fixtures import make_store

ROOT = Path(__file__).resolve().parents[2]
HTTP = httpx.Client(timeout=120)  # generous: the machine is shared with other jobs
MSGS = [{"role": "user", "content": "how do i renew a permit?"}]
CHATS = ("tinychat", "chat-a", "chat-b")
TEXTS = ["the panel has a crack", "call the hotline"]


@dataclass
class Live:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]
    keys: dict[str, str]
    offline: dict[str, str]  # greedy 8-token answers of load_chat_model(...).generate, per model
    prompt_tokens: int
    embeddings: np.ndarray  # (2, 16) of the text encoder on TEXTS, computed offline
    log: Path

    def h(self, who: str = "viewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def chat(self, model: str, who: str = "viewer", **extra: object) -> httpx.Response:
        body = {"model": model, "messages": MSGS, "max_tokens": 8, "temperature": 0, **extra}
        return HTTP.post(f"{self.url}/v1/chat/completions", json=body, headers=self.h(who))


def register_lora(store: Store, name: str, seed: int) -> Model:
    """A LoRA chat L2 over ``tinychat`` with random (non-zero) adapter weights drawn from ``seed``."""
    backbone, base = load_base(store, "tinychat")
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    backbone.module = peft.get_peft_model(backbone.module, cfg)
    return register_chat_model(store, name=name, base=base, backbone=backbone, method="lora", dataset_version=None,
                               config={"method": "lora"}, metrics={})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("serve-chat")
    home = tmp / "home"
    st = make_store(home)
    register_tiny_chat(st, tmp)
    register_lora(st, "chat-a", 3)
    register_lora(st, "chat-b", 1)
    register_foundation(st, "local", path=str(write_tiny_hf_model(tmp / "encoder", "text")), name="tiny-enc")
    chats = {ref: load_chat_model(st, ref) for ref in CHATS}
    offline = {ref: chat.generate(MSGS, 8).text for ref, chat in chats.items()}
    encoder = load_registered(st, "tiny-enc")[0]
    with torch.inference_mode():
        vectors = encoder.embed(encoder.preprocess(TEXTS)).numpy()
    keys = {"viewer": create_key(st, "viewer")[1], "scoped": create_key(st, "viewer", ["chat-a"])[1]}
    st.close()
    port = free_port()
    env = {**os.environ, "MODELFAB_HOME": str(home)}
    env.pop("MODELFAB_DB", None)
    log = tmp / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/modelfab"), "serve", *CHATS, "tiny-enc", "--port", str(port),
             "--chat-max-tokens", "16", "--max-body-mb", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if HTTP.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server not ready: " + log.read_text()
        time.sleep(0.2)
    yield Live(url, home, proc, keys, offline, len(chats["chat-a"].encode(MSGS)), vectors, log)
    if proc.poll() is None:
        proc.kill()


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def _events(r: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream."""
    lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[len("data: "):] for line in lines]


def test_models_listed_with_one_base_copy(live: Live) -> None:
    _error(HTTP.get(f"{live.url}/v1/models"), 401, "unauthorized")
    cards = {c["name"]: c for c in HTTP.get(f"{live.url}/v1/models", headers=live.h()).json()["models"]}
    assert list(cards) == [*CHATS, "tiny-enc"]
    assert [cards[n]["kind"] for n in cards] == ["chat", "chat", "chat", "embedding"]
    base = cards["tinychat"]
    assert base["method"] == "base" and base["context_length"] == 256
    assert cards["chat-a"]["method"] == "lora" and cards["chat-a"]["parent_id"] == base["id"]
    assert {cards[n]["shared_base"] for n in CHATS} == {base["id"]}  # one copy of the base serves all three
    assert 0 < cards["chat-a"]["own_bytes"] == cards["chat-b"]["own_bytes"] < base["own_bytes"] / 5
    assert cards["chat-a"]["deployment_id"] and cards["tiny-enc"]["modality"] == "text"
    one = HTTP.get(f"{live.url}/v1/models/chat-b", headers=live.h())
    assert one.status_code == 200 and one.json()["kind"] == "chat"
    scoped = HTTP.get(f"{live.url}/v1/models", headers=live.h("scoped")).json()["models"]
    assert [c["name"] for c in scoped] == ["chat-a"]


def test_completion_shape_and_usage(live: Live) -> None:
    r = live.chat("chat-a")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "chat-a" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"] == {"role": "assistant", "content": live.offline["chat-a"]}
    usage = body["usage"]
    assert usage["prompt_tokens"] == live.prompt_tokens and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 8 else "stop")
    info = body["modelfab"]
    assert info["model_version"] == 1 and 0 < info["time_to_first_token_ms"] <= info["latency_ms"]


def test_adapters_switch_per_request(live: Live) -> None:
    assert len(set(live.offline.values())) == 3  # the base and both adapters answer differently
    for ref in ("chat-b", "chat-a", "tinychat", "chat-b", "tinychat", "chat-a"):  # interleaved, one by one
        r = live.chat(ref)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == live.offline[ref], ref
    order = [*CHATS] * 4
    with ThreadPoolExecutor(6) as pool:  # and concurrently: each request gets its own adapter
        texts = list(pool.map(lambda ref: live.chat(ref).json()["choices"][0]["message"]["content"], order))
    assert texts == [live.offline[ref] for ref in order]


def test_streaming(live: Live) -> None:
    for ref in ("tinychat", "chat-a"):
        body = {"model": ref, "messages": MSGS, "max_tokens": 8, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        with HTTP.stream("POST", f"{live.url}/v1/chat/completions", json=body, headers=live.h()) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = _events(r)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == ref for c in chunks)
        assert len({c["id"] for c in chunks}) == 1 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:] if c["choices"]
                  and c["choices"][0]["delta"].get("content")]
        assert "".join(pieces) == live.offline[ref] == live.chat(ref).json()["choices"][0]["message"]["content"]
        if ref == "tinychat":
            assert len(pieces) >= 2  # text goes out piece by piece, not in one block at the end
        finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] in ("stop", "length")
        usage = chunks[-1]["usage"]
        assert chunks[-1]["choices"] == [] and usage["prompt_tokens"] == live.prompt_tokens


def test_errors_are_4xx_json(live: Live) -> None:
    url = f"{live.url}/v1/chat/completions"
    long = {"model": "chat-a", "messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 8}
    err = _error(HTTP.post(url, json=long, headers=live.h()), 413, "context_length_exceeded")
    assert "tokens + 8 new tokens, over the context limit of 256" in err["message"]
    _error(HTTP.post(url, json={**long, "stream": True}, headers=live.h()), 413)  # before any event is sent
    _error(live.chat("nope"), 404, "not_found")
    _error(HTTP.post(url, json={"model": "chat-a", "messages": MSGS}), 401, "unauthorized")
    _error(HTTP.post(url, json={"model": "chat-a", "messages": MSGS}, headers={"Authorization": "Bearer x"}), 401)
    _error(live.chat("chat-b", who="scoped"), 403, "forbidden")
    _error(live.chat("tiny-enc"), 400, "not_a_chat_model")
    predict = HTTP.post(f"{live.url}/v1/models/chat-a:predict", json={"inputs": [{"text": "hi"}]}, headers=live.h())
    _error(predict, 400, "not_a_scenario_model")
    _error(live.chat("chat-a", max_tokens=17), 422, "invalid_request")  # --chat-max-tokens 16
    bad: list[object] = [[], [{"role": "bot", "content": "hi"}], [{"role": "user"}], "hi",
                         [{"role": "user", "content": 3}]]
    for messages in bad:
        _error(HTTP.post(url, json={"model": "chat-a", "messages": messages}, headers=live.h()), 422)
    _error(live.chat("chat-a", stop=["\n"]), 422)
    _error(HTTP.post(url, content=b"{not json", headers={**live.h(), "content-type": "application/json"}), 422)
    big = {"model": "chat-a", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    _error(HTTP.post(url, json=big, headers=live.h()), 413, "payload_too_large")  # --max-body-mb 1
    assert live.proc.poll() is None


def test_embeddings(live: Live) -> None:
    url = f"{live.url}/v1/embeddings"
    r = HTTP.post(url, json={"model": "tiny-enc", "input": TEXTS}, headers=live.h())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny-enc" and body["usage"]["prompt_tokens"] > 2
    assert [d["object"] for d in body["data"]] == ["embedding"] * 2 and [d["index"] for d in body["data"]] == [0, 1]
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)  # (2, 16)
    np.testing.assert_allclose(got, live.embeddings, atol=1e-5)
    b64 = HTTP.post(url, json={"model": "tiny-enc", "input": TEXTS[0], "encoding_format": "base64"},
                    headers=live.h()).json()["data"]  # fmt: skip
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(b64[0]["embedding"]), dtype="<f4"), live.embeddings[0],
                               atol=1e-5)
    chat = HTTP.post(url, json={"model": "chat-a", "input": "hello"}, headers=live.h()).json()
    assert len(chat["data"][0]["embedding"]) == 32  # a chat model embeds too (its hidden size)
    _error(HTTP.post(url, json={"model": "tiny-enc", "input": ["ok", " "]}, headers=live.h()), 422, "invalid_input")
    _error(HTTP.post(url, json={"model": "tiny-enc", "input": []}, headers=live.h()), 422)
    _error(HTTP.post(url, json={"model": "tiny-enc", "input": "x", "dimensions": 8}, headers=live.h()), 422)
    _error(HTTP.post(url, json={"model": "tiny-enc", "input": "word " * 100}, headers=live.h()), 413)  # 64 positions
    _error(HTTP.post(url, json={"model": "nope", "input": "x"}, headers=live.h()), 404)
    _error(HTTP.post(url, json={"model": "tiny-enc", "input": "x"}), 401)


def test_schemathesis_no_5xx(live: Live) -> None:
    """Generated bodies against the chat and embedding routes (half of them naming a served model)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    served = {"/v1/chat/completions": "chat-a", "/v1/embeddings": "tiny-enc"}
    failures: list[str] = []
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in served:
            continue

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            nonlocal checked
            if isinstance(case.body, dict) and hash(str(case.body)) % 2:
                case.body["model"] = served[case.path]
            response = case.call(base_url=live.url, headers=live.h(), timeout=120)
            checked += 1
            if response.status_code >= 500 or '"code":"internal"' in response.text:
                failures.append(f"{case.method} {case.formatted_path} {str(case.body)[:200]}: {response.status_code} "
                                f"{response.text[:200]}")

        run()
    assert checked >= 20 and failures == []
    assert live.proc.poll() is None


def test_metrics(live: Live) -> None:
    text = HTTP.get(f"{live.url}/metrics", headers=live.h()).text
    for series in ('modelfab_chat_requests_total{model="chat-a",status="200"}',
                   'modelfab_chat_requests_total{model="chat-a",status="413"}',
                   'modelfab_chat_completion_tokens_total{model="chat-b"}',
                   'modelfab_chat_prompt_tokens_total{model="tinychat"}',
                   'modelfab_chat_time_to_first_token_seconds_count{model="chat-a"}',
                   'modelfab_chat_tokens_per_second_count{model="tinychat"}',
                   'modelfab_chat_generation_seconds_count{model="chat-b"}',
                   'modelfab_embedding_requests_total{model="tiny-enc",status="200"}',
                   'modelfab_embedding_inputs_total{model="tiny-enc"}', "modelfab_chat_pending 0.0"):
        assert series in text, series


def test_shutdown_records_chat_counters(live: Live, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    live.proc.send_signal(signal.SIGTERM)
    assert live.proc.wait(timeout=60) in (0, -signal.SIGTERM), live.log.read_text()
    assert "Traceback" not in live.log.read_text()
    monkeypatch.setenv("MODELFAB_HOME", str(live.home))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    deps = {d["counters"]["ref"]: d for d in json.loads(cli("deployments", "list", "--json").out)}
    assert set(deps) == {*CHATS, "tiny-enc"} and all(d["status"] == "stopped" for d in deps.values())
    assert deps["chat-a"]["endpoint"].endswith("/v1/chat/completions")
    assert deps["chat-a"]["counters"]["requests"] > 0 and deps["chat-a"]["counters"]["completion_tokens"] > 0
    assert deps["tiny-enc"]["counters"]["embedded_texts"] >= 3
