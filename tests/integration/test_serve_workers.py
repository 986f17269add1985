"""``modelfab serve --workers 2``: two real uvicorn worker processes behind one port answer predictions,
accept feedback on each other's predictions, and both add their counters to the deployment at shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelfab.serve.auth import create_key
from modelfab.tune import TuneConfig, tune
from tests.helpers import free_port
from tests.tune_fixtures import tiny_image_store, write_blobs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_two_workers(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    st = tiny_image_store(home, tmp_path)
    tune(st, base="lite0-64", data="blobs", name="cell", cfg=TuneConfig(method="probe"))
    key = create_key(st, "annotator")[1]
    st.close()
    port = free_port()
    env = {**os.environ, "MODELFAB_HOME": str(home)}
    env.pop("MODELFAB_DB", None)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        args = [str(ROOT / ".venv/bin/modelfab"), "serve", "cell", "--port", str(port), "--workers", "2"]
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    client = httpx.Client(timeout=120)
    try:
        deadline = time.monotonic() + 240
        while True:  # both workers ready: 12 fresh connections in a row answer 200 (each may hit either worker)
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if all(httpx.get(f"{url}/readyz", timeout=5).status_code == 200 for _ in range(12)):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        children = subprocess.run(["ps", "-ww", "--ppid", str(proc.pid), "-o", "args="], capture_output=True, text=True)
        workers = [line for line in children.stdout.splitlines() if "multiprocessing.spawn" in line]
        assert len(workers) == 2, children.stdout  # two uvicorn worker processes
        image = (write_blobs(tmp_path / "fresh", per_class=1, seed=7) / "ok" / "ok000.png").read_bytes()

        def predict(_: int) -> str:
            r = client.post(f"{url}/v1/models/cell:predict", files=[("files", ("x.png", image, "image/png"))],
                            headers=headers)  # fmt: skip
            assert r.status_code == 200, r.text
            return str(r.json()["predictions"][0]["id"])

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(predict, range(40)))
        for pid in ids[:6]:  # a feedback may land on the worker that did not make the prediction
            r = client.post(f"{url}/v1/feedback", json={"prediction_id": pid, "label": "ok"}, headers=headers)
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the supervisor did not exit within 90 s of SIGTERM:\n" + log.read_text())
    assert "Traceback" not in log.read_text()
    monkeypatch.setenv("MODELFAB_HOME", str(home))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    deps = [d for d in json.loads(cli("deployments", "list", "--json").out) if d["counters"].get("ref") == "cell"]
    assert len(deps) == 1 and deps[0]["status"] == "stopped"
    assert deps[0]["counters"]["predictions"] == 40  # both workers added their counts
