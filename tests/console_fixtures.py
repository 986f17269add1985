"""A registry prepared for the web console tests and a live console server (uvicorn in a thread).

The store holds: image dataset ``blobs`` (40 labelled cells), ``pool`` (12 cells imported unlabelled, for
labeling), text dataset ``reviews``; the lineage L0 ``lite0-64`` -> L1 ``cells-l1`` -> L2 ``cell-a`` (a real
probe tune); API keys of every role; and a pipeline run waiting at a manual approve gate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from modelfab.console import console_app
from modelfab.data import import_image_folder, import_text_table
from modelfab.flow import load_spec, run_pipeline, validate
from modelfab.llm.ranking import assign, candidates, import_rankings, task_records
from modelfab.llm.templates import render_dataset
from modelfab.serve.auth import create_key
from modelfab.store.models import model_card
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, tune
from tests.helpers import free_port
from tests.llm_fixtures import register_tiny_chat
from tests.tune_fixtures import make_store, tiny_image_store, write_blobs, write_reviews

GATE = """\
name: console-gate
steps:
  data:
    uses: import
    with: {{source: folder, path: "{root}/gate", name: gate, unlabeled: true}}
  approve:
    uses: approve
    needs: [data]
    with: {{model: cell-a, manual: true, alias: reviewed}}
  after:
    uses: import
    needs: [approve]
    with: {{source: folder, path: "{root}/gate-after", name: gate-after}}
"""


@dataclass
class Prepared:
    home: Path
    root: Path
    keys: dict[str, str]  # role -> key
    names: dict[str, str] = field(default_factory=dict)  # role -> key name


def prepare(root: Path) -> Prepared:
    """Build the registry under ``root/home`` (about 15 s: one Lite0 build and one probe tune)."""
    home = root / "home"
    st = tiny_image_store(home, root)  # blobs + lite0-64
    try:
        l0 = st.get_model("lite0-64")
        # an industry model holding the L0's weights (a real backbone a tune can start from)
        st.register_model(name="cells-l1", tier="L1", task=l0.task, arch=l0.architecture, config=l0.config,
                          params=l0.params, weights=l0.weights_digest, parent=l0.id, dataset_version="blobs@1",
                          card={**model_card(st, l0.id), "note": "console test L1"})
        tune(st, base="cells-l1", data="blobs", name="cell-a", cfg=TuneConfig(method="probe"))
        import_image_folder(st, write_blobs(root / "pool", per_class=6, seed=3), "pool", unlabeled=True)
        import_text_table(st, write_reviews(root / "reviews.csv", n=16), "reviews")
        keys, names = {}, {}
        for role in ("viewer", "annotator", "engineer", "admin"):
            keys[role] = create_key(st, role, name=f"{role}-test")[1]
            names[role] = f"{role}-test"
        return Prepared(home, root, keys, names)
    finally:
        st.close()


def start_gate_run(p: Prepared) -> str:
    """A pipeline run waiting at its manual approve step (import -> approve -> import)."""
    write_blobs(p.root / "gate", per_class=2, seed=11)
    write_blobs(p.root / "gate-after", per_class=2, seed=12)
    spec = p.root / "gate.yaml"
    spec.write_text(GATE.format(root=p.root))
    st = make_store(p.home)
    try:
        summary = run_pipeline(st, validate(load_spec(spec), st))
    finally:
        st.close()
    assert summary.status == "waiting", summary.message
    return summary.run_id


@dataclass
class Live:
    url: str
    prepared: Prepared

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.prepared.keys[role]}"}

    def store(self) -> Store:
        return make_store(self.prepared.home)


@contextmanager
def live_console(p: Prepared, bench_dir: Path | None = None) -> Iterator[Live]:
    """The console app on a free loopback port, served by uvicorn in a background thread."""
    st = make_store(p.home)
    port = free_port()
    config = uvicorn.Config(console_app(st, bench_dir=bench_dir), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "console server did not start"
        time.sleep(0.05)
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    try:
        yield Live(url, p)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        st.close()


# ---- language-model views: a tiny chat LM, an SFT dataset from a template, a ranking dataset

TEMPLATE = """\
name: permits
system: You answer questions about city services.
user: How do I {{ action }} a {{ service }}?
assistant: "{{ answer }}"
"""
ROWS = """\
action,service,answer
renew,parking permit,Bring the old permit and pay the fee.
apply for,building permit,Submit the plans online.
cancel,water contract,Call the hotline with your contract number.
renew,passport,Book an appointment and bring a photo.
transfer,business license,Fill in form B7 at the trade office.
register,dog,Show the vaccination card at the city hall.
"""
ANNOTATORS = ("ann", "bob", "cy", "dee")  # 6 prompts, overlap 2: three each; ann and bob share one


def prepare_llm(root: Path) -> Prepared:
    """A registry with ``tinychat`` (L0), SFT dataset ``prompts`` (6 chats) and ranking dataset ``rk``
    (v1: 3 candidates per prompt, v2: assigned to ann, bob, cy, dee with overlap 2); API keys named
    ``viewer-test`` (viewer), ``ann`` and ``bob`` (annotators). About 5 s."""
    home = root / "home"
    st = make_store(home)
    try:
        register_tiny_chat(st, root)
        (root / "permits.yaml").write_text(TEMPLATE)
        (root / "rows.csv").write_text(ROWS)
        render_dataset(st, root / "permits.yaml", model="tinychat", name="prompts", rows=root / "rows.csv")
        candidates(st, "tinychat", "prompts", 3, "rk", max_new_tokens=4)
        assign(st, "rk", list(ANNOTATORS), overlap=2)
        keys = {"viewer": create_key(st, "viewer", name="viewer-test")[1],
                "annotator": create_key(st, "annotator", name="ann")[1],
                "bob": create_key(st, "annotator", name="bob")[1]}
        return Prepared(home, root, keys, {"viewer": "viewer-test", "annotator": "ann", "bob": "bob"})
    finally:
        st.close()


def import_for(live: Live, annotator: str, order: str = "ids") -> str:
    """Rank every item assigned to ``annotator`` through the library (``ids``: c0 > c1 > c2; ``reverse``)."""
    st = live.store()
    try:
        path = live.prepared.root / f"{annotator}-{order}.jsonl"
        lines = []
        for t in task_records(st, "rk", annotator):
            ids = sorted(c["id"] for c in t["candidates"])
            lines.append(json.dumps({"key": t["key"], "ranking": ids[::-1] if order == "reverse" else ids}))
        path.write_text("\n".join(lines) + "\n")
        return import_rankings(st, "rk", path, annotator).ref
    finally:
        st.close()
