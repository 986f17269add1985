"""``field-traffic``: simulated production traffic through the real REST API, with an inspector.

For demos and benchmarks: the step serves a deployed L2 in-process (uvicorn on a free loopback
port, the same app as ``modelfab serve``), sends the items of a dataset split to
``POST /v1/models/{ref}:predict`` one image per request with a temporary annotator key, compares
each answer with the item's true class (visible labels, or the hidden ground truth of an
``--unlabeled`` import) and corrects a seeded fraction of the wrong answers through
``POST /v1/feedback``. Stopping the server marks its deployment stopped with its counters; that
deployment is the step's output, ready for ``ingest-feedback``.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field

from modelfab.core.errors import ConfigError, DataError
from modelfab.flow.steps.base import Step, StepContext, StepParams, register
from modelfab.flow.steps.model_steps import StepFailed
from modelfab.store.store import Store

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0


class TrafficParams(StepParams):
    model: str
    data: str
    requests: int = Field(default=100, ge=1, le=1_000_000)
    concurrency: int = Field(default=4, ge=1, le=64)
    correct_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    runtime: Literal["auto", "onnxruntime", "torch"] = "auto"
    seed: int = 0


@dataclass
class FieldItem:
    """One item the line sends: its key, stored content and true class."""

    key: str
    content_hash: str
    truth: str
    text: str | None = None  # text datasets: what is sent (images are sent from the artifact store)


@dataclass
class Answer:
    """What the server said about one request."""

    index: int
    item: FieldItem
    prediction_id: str
    label: str


def field_items(
    store: Store, data_ref: str, view_name: str | None, model_classes: list[str], modality: str = "image"
) -> tuple[str, list[FieldItem]]:
    """The labelled items of ``DATASET@v[:split]`` (default test) with their true class, sorted by key.

    Truth is the hidden ground truth where an item has one (``--unlabeled`` imports), else its visible
    label, read through the model's label view (or the dataset's first one). DataError when the split
    has no labelled items or the dataset's classes differ from the model's.
    """
    from modelfab.data.tasks import get_task, task_labels
    from modelfab.evaluate.model_eval import parse_data_split

    data, split = parse_data_split(data_ref)
    dv = store.get_dataset_version(data)
    ref = f"{dv.dataset.name}@{dv.version}"
    if dv.dataset.modality != modality:
        raise DataError(f"{ref} is a {dv.dataset.modality} dataset; the model takes {modality}")
    if not dv.tasks:
        raise DataError(f"{ref} has no labels (no task): the inspector needs ground truth")
    name = view_name if view_name in dv.tasks else next(iter(dv.tasks))
    view = get_task(dv.tasks, name)
    rows = store.version_items(dv.id, include_hidden=True)
    labels = task_labels(rows, view, ground_truth=True)
    classes = list(view.classes) or sorted(set(labels.values()))
    if set(classes) != set(model_classes):
        raise DataError(f"{ref} task {name} has classes {classes}; the model has {model_classes}")
    items = sorted(
        (FieldItem(r.key, r.content_hash, labels[r.key], r.text if modality == "text" else None)
         for r in rows if r.split == split and r.key in labels),
        key=lambda it: it.key,
    )
    if not items:
        raise DataError(f"{ref}: no labelled items in split {split!r} for {name} (nothing to send)")
    return f"{ref}:{split}", items


def _free_socket() -> socket.socket:
    """A listening-ready TCP socket bound to a free loopback port (handed to uvicorn: no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _error_text(resp: Any) -> str:
    try:
        body = resp.json()
        return f"{resp.status_code} {body['error']['code']}: {body['error']['message']}"
    except Exception:
        return f"{resp.status_code}: {resp.text[:200]}"


class LocalServer:
    """The serving app under uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self._serve, name=f"field-traffic-{self.port}", daemon=True)
        self.failure: BaseException | None = None

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # reported by wait_ready / stop
            self.failure = exc

    def start(self) -> None:
        self.thread.start()

    def wait_ready(self, client: Any, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``/readyz`` until 200; ConfigError when loading fails, the server dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        last = "not started"
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                if self.failure is None or isinstance(self.failure, SystemExit):
                    why = "the app's start-up failed; see the log above"
                else:
                    why = f"{type(self.failure).__name__}: {self.failure}"
                raise ConfigError(f"field-traffic: the server on {self.url} stopped before it was ready ({why})")
            if self.server.started:
                try:
                    resp = client.get(f"{self.url}/readyz", timeout=5.0)
                except Exception as exc:  # httpx transport errors while binding
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status_code == 200:
                        return
                    try:
                        body = dict(resp.json())
                    except ValueError:
                        body = {"status": f"HTTP {resp.status_code}"}
                    last = f"{body.get('status')}: {body.get('detail') or ''}".rstrip(": ")
                    if body.get("status") == "failed":
                        raise ConfigError(f"field-traffic: the model failed to load ({body.get('detail')})")
            time.sleep(0.05)
        raise ConfigError(f"field-traffic: {self.url}/readyz not ready after {timeout_s:.0f} s ({last})")

    def stop(self) -> None:
        """Graceful shutdown (runs the app's lifespan exit: counters, deployment stopped)."""
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT_S)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.thread.is_alive():
            raise StepFailed(f"field-traffic: the server on {self.url} did not stop within {STOP_TIMEOUT_S:.0f} s")


def choose_corrections(wrong: list[int], fraction: float, seed: int) -> list[int]:
    """``round(fraction * len(wrong))`` of the wrong request indices, drawn with ``seed``, in order."""
    k = min(len(wrong), round(fraction * len(wrong)))
    return sorted(random.Random(seed).sample(sorted(wrong), k))


@register("field-traffic")
class FieldTrafficStep(Step):
    """Simulate a production line: send a split's images to the served model over real HTTP and let an
    inspector correct a seeded fraction of the wrong answers; outputs the session's deployment."""

    Params = TrafficParams
    cacheable = False
    kinds: ClassVar[dict[str, str]] = {"model": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {
        "deployment": "deployment", "requests": "number", "accuracy": "number", "corrections": "number",
    }
    summary = "simulated field traffic over the REST API with inspector corrections (demos, benchmarks)"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, TrafficParams)
        import httpx

        from modelfab.serve.app import create_app
        from modelfab.serve.auth import create_key, revoke_key
        from modelfab.serve.config import ServeSettings
        from modelfab.serve.runtime import plan_model

        store = ctx.store
        plan = plan_model(store, params.model, params.runtime)  # ConfigError when it cannot be served
        classes = [str(c) for c in plan.info["classes"]]
        data_ref, items = field_items(store, params.data, plan.info.get("labels"), classes, plan.modality)
        ctx.log(f"{params.requests} requests of {len(items)} items of {data_ref} to {plan.ref} "
                f"({plan.runtime}), concurrency {params.concurrency}")

        sock = _free_socket()
        port = int(sock.getsockname()[1])
        settings = ServeSettings(host="127.0.0.1", port=port, runtime=params.runtime, record_inputs=True)
        try:
            app = create_app(settings, [params.model], store=store, base_url=f"http://127.0.0.1:{port}")
        except BaseException:
            sock.close()
            raise
        server = LocalServer(app, sock)
        key, token = create_key(store, "annotator", name=f"field-traffic {ctx.run_id}/{ctx.step}")
        headers = {"Authorization": f"Bearer {token}"}
        deployment: str | None = None
        started = time.perf_counter()
        try:
            server.start()
            limits = httpx.Limits(max_connections=params.concurrency + 2)
            with httpx.Client(headers=headers, timeout=120.0, limits=limits) as client:
                server.wait_ready(client)
                deployment = app.state.serve.deployments.get(params.model)
                answers = self._send(client, store, server.url, params, items)
                wrong = [a.index for a in answers if a.label != a.item.truth]
                chosen = choose_corrections(wrong, params.correct_fraction, params.seed)
                for i in chosen:
                    a = answers[i]
                    resp = client.post(f"{server.url}/v1/feedback",
                                       json={"prediction_id": a.prediction_id, "label": a.item.truth})
                    if resp.status_code != 200:
                        raise StepFailed(f"field-traffic: feedback on {a.item.key} failed: {_error_text(resp)}")
        finally:
            try:
                server.stop()
            finally:
                revoke_key(store, key.id)
        if deployment is None:
            raise StepFailed("field-traffic: the server recorded no deployment")
        seconds = time.perf_counter() - started
        accuracy = (len(answers) - len(wrong)) / len(answers)
        ctx.record["traffic"] = {"data": data_ref, "ref": plan.ref, "runtime": plan.runtime, "items": len(items),
                                 "wrong": len(wrong), "seconds": round(seconds, 3)}
        ctx.log(f"deployment {deployment}: {len(answers)} predictions, field accuracy {accuracy:.4f}, "
                f"{len(wrong)} wrong, {len(chosen)} corrected ({seconds:.1f} s)")
        return {"deployment": deployment, "requests": len(answers), "accuracy": accuracy, "corrections": len(chosen)}

    @staticmethod
    def _send(client: Any, store: Store, url: str, params: TrafficParams, items: list[FieldItem]) -> list[Answer]:
        """POST every request (item ``i % len(items)``, one image each) as multipart, ``concurrency`` at a time."""
        endpoint = f"{url}/v1/models/{quote(params.model, safe='@:')}:predict"

        def one(index: int) -> Answer:
            item = items[index % len(items)]
            if item.text is not None:  # a text model: JSON body
                resp = client.post(endpoint, json={"inputs": [{"text": item.text}]})
            else:
                data = store.artifacts.get_bytes(item.content_hash)
                name = item.key.rsplit("/", 1)[-1]
                resp = client.post(endpoint, files=[("files", (name, data, "application/octet-stream"))])
            if resp.status_code != 200:
                raise StepFailed(f"field-traffic: predict on {item.key} failed: {_error_text(resp)}")
            pred = resp.json()["predictions"][0]
            return Answer(index, item, str(pred["id"]), str(pred["label"]))

        with ThreadPoolExecutor(max_workers=params.concurrency, thread_name_prefix="field-traffic") as pool:
            return list(pool.map(one, range(params.requests)))
