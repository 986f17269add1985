"""Serving benchmark: a real `modelfab serve` process on loopback under a bounded (closed-loop) load.

Arms (one ELPV Lite0 LoRA L2, one image per request, multipart upload, a viewer API key):
  (a) naive: batching off, torch runtime (each request runs alone);
  (a') the same with one runtime thread per request and two requests at once (--threads 1
      --concurrent-batches 2), so the gain of (b) is not just threading;
  (b) dynamic batching (max 16, 5 ms) + ONNX Runtime on the exported, parity-checked child
      (batching + torch when no ONNX export can be made; the JSON says which), one runtime thread per
      batch and two batches at once.
At 1, 8 and 32 concurrent clients: throughput, p50 and p99 latency. Then memory: resident set of a
server hosting 1, 2 and 4 LoRA L2s of the same Lite0 base (served from one shared copy).

Load generator: `wrk` (Debian package; C, event-driven, ~1% of a core here) when it is on PATH, with
bench/serve_wrk.lua cycling through 64 multipart bodies; else async httpx clients in this process
(which take a good part of one of the two cores away from the server). MODELFAB_BENCH_SERVE_LOADGEN
= wrk | httpx forces one. With wrk, p50/p99 of a level are the mean p50 and the largest p99 over the
repetitions (wrk reports percentiles per run); with httpx they are pooled over all requests.

    MODELFAB_BENCH_HOME=bench/.home .venv/bin/python bench/serve.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.append(str(Path(__file__).parent))
from common import ResultFile

from modelfab.core.config import Settings
from modelfab.core.errors import ModelfabError
from modelfab.serve.auth import create_key
from modelfab.serve.runtime import plan_model
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, tune

HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home")).resolve()
OUT = Path(__file__).parent / "results" / "serve.json"
ROOT = Path(__file__).resolve().parent.parent
MODEL = os.environ.get("MODELFAB_BENCH_SERVE_MODEL", "bench-lora-10-0")
LEVELS = (1, 8, 32)
SECONDS = float(os.environ.get("MODELFAB_BENCH_SERVE_SECONDS", "10"))
REPS = 2
THREADS = os.environ.get("MODELFAB_BENCH_SERVE_THREADS")  # --threads of both servers (default: torch's)
SUFFIX = f"-t{THREADS}" if THREADS else ""
SKIP_MEMORY = bool(os.environ.get("MODELFAB_BENCH_SERVE_SKIP_MEMORY"))  # keep a measured memory cell
WARM_S = 2.0
N_IMAGES = 64
LORA_SEEDS = (2, 3)  # extra LoRA L2s trained for the memory arm (seeds 0, 1 exist as bench-lora-10-*)
LOADGEN = os.environ.get("MODELFAB_BENCH_SERVE_LOADGEN") or ("wrk" if shutil.which("wrk") else "httpx")
BOUNDARY = "mfbench7d2f"
WRK_SCRIPT = Path(__file__).parent / "serve_wrk.lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`modelfab serve` in a subprocess; stopped with SIGTERM (graceful shutdown)."""

    def __init__(self, models: list[str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MODELFAB_HOME": str(HOME)}
        env.pop("MODELFAB_DB", None)
        self.log = open(HOME / f"serve-bench-{self.port}.log", "w")  # noqa: SIM115
        cmd = [str(ROOT / ".venv/bin/modelfab"), "serve", *models, "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def load(url: str, key: str, images: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` concurrent loops, one request in flight each (bounded load), for ``seconds``."""
    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        async def one(i: int, record: bool) -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                r = await client.post(url, files=[("files", ("cell.png", images[i % len(images)], "image/png"))])
            except httpx.TransportError:  # a dropped connection counts as an error, the run goes on
                errors += 1
                return
            if r.status_code != 200:
                errors += 1
            elif record:
                lat.append((time.perf_counter() - t) * 1000)

        async def worker(w: int, until: float, record: bool) -> None:
            i = w
            while time.perf_counter() < until:
                await one(i, record)
                i += clients

        await asyncio.gather(*(worker(w, time.perf_counter() + WARM_S, False) for w in range(clients)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(w, start + seconds, True) for w in range(clients)))
        elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": len(lat), "errors": errors, "seconds": elapsed, "latencies": lat}


def multipart_bodies(images: list[bytes], folder: Path) -> Path:
    """One multipart body per image (field ``files``) in ``folder`` as 0.bin, 1.bin, ... for wrk."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cell.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()
        (folder / f"{i}.bin").write_bytes(head + img + f"\r\n--{BOUNDARY}--\r\n".encode())
    return folder


def wrk_run(url: str, key: str, bodies: Path, clients: int, seconds: float) -> dict[str, Any]:
    env = {**os.environ, "MF_BODIES": str(bodies), "MF_KEY": key, "MF_BOUNDARY": BOUNDARY}
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "120s", "-s", str(WRK_SCRIPT), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("MFRESULT "))
    data: dict[str, Any] = json.loads(line.removeprefix("MFRESULT "))
    return data


def load_wrk(url: str, key: str, bodies: Path, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` wrk connections, one request in flight each, after a WARM_S warm-up run."""
    wrk_run(url, key, bodies, clients, WARM_S)
    r = wrk_run(url, key, bodies, clients, seconds)
    errors = r["non2xx"] + r["socket_errors"] + r["timeouts"]
    return {"clients": clients, "requests": r["requests"] - errors, "errors": errors,
            "seconds": r["duration_us"] / 1e6, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "p90_ms": r["p90_us"] / 1000, "max_ms": r["max_us"] / 1000}


def ensure_onnx(st: Store) -> tuple[str, str]:
    """(runtime, note) for arm (b): onnxruntime on a passing export, else torch."""
    try:
        return plan_model(st, MODEL, "onnxruntime").runtime, "ONNX Runtime on the exported child"
    except ModelfabError:
        pass
    try:
        from modelfab.compress.export import export_model

        res = export_model(st, MODEL, "onnx")
        if res.passed:
            return "onnxruntime", f"ONNX Runtime on {res.model.name} (exported here, parity {res.parity['reason']})"
        return "torch", f"export parity failed ({res.parity['reason']}): batching + torch"
    except (ImportError, ModelfabError) as exc:
        return "torch", f"no ONNX export possible ({exc}): batching + torch"


def lora_models(st: Store) -> list[str]:
    """Four LoRA L2s of the same Lite0 base: the two bench-lora-10-* plus two trained here."""
    names = ["bench-lora-10-0", "bench-lora-10-1"]
    first = st.get_model(names[0])
    size = first.config.get("image_size")  # same base and input size: they share one base copy
    for seed in LORA_SEEDS:
        name = f"bench-serve-lora{size}-{seed}"
        try:
            st.get_model(name)
        except ModelfabError:
            cfg = TuneConfig(method="lora", labels="elpv-defect", shots=10, seed=seed, epochs=2, max_seconds=120,
                             image_size=size)
            tune(st, base=first.parent_id or "lite0", data="elpv", name=name, cfg=cfg)
        names.append(name)
    return names


def pooled(runs: list[dict[str, Any]], lat: list[float]) -> dict[str, Any]:
    """One level over its repetitions: exact pooled percentiles when the latencies are known (httpx), else
    the mean p50 and the largest p99 of the runs (wrk)."""
    seconds = sum(r["seconds"] for r in runs)
    requests = sum(r["requests"] for r in runs)
    if lat:
        lat = sorted(lat)
        p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    else:
        p50, p99 = statistics.fmean(r["p50_ms"] for r in runs), max(r["p99_ms"] for r in runs)
    return {"clients": runs[0]["clients"], "requests": requests, "errors": sum(r["errors"] for r in runs),
            "seconds": seconds, "throughput_rps": requests / seconds, "p50_ms": p50, "p99_ms": p99, "reps": runs,
            "loadavg_1m": [r["loadavg_1m"] for r in runs]}


def main() -> None:
    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    model = st.get_model(MODEL)
    dv = st.get_dataset_version(int(model.dataset_version_id or 0))
    rows = [r for r in st.version_items(dv.id) if r.split == "test"][:N_IMAGES]
    images = [st.artifacts.get_bytes(r.content_hash) for r in rows]
    _, key = create_key(st, "viewer", name="bench-serve")
    runtime_b, note_b = ensure_onnx(st)
    header = {"benchmark": "serve", "model": f"{model.name}:{model.version}", "model_id": model.id,
              "dataset": f"{dv.dataset.name}@{dv.version}", "split_hash": dv.split_info.get("hash"),
              "seeds": {"lora_extra": list(LORA_SEEDS), "images": "first 64 test items by key"},
              "levels": list(LEVELS), "seconds_per_level": SECONDS, "reps": REPS, "loadgen": LOADGEN}
    results = ResultFile(OUT, header)
    threads = ["--threads", THREADS] if THREADS else []
    # one runtime thread per batch and two batches at once: both cores busy without intra-op sync
    slots = ["--threads", "1", "--concurrent-batches", "2"]
    arms = {
        f"naive-torch{SUFFIX}": (["--runtime", "torch", "--no-batching", *threads],
                                 "batching off, torch runtime, default threads"),
        f"naive-torch-1x2{SUFFIX}": (["--runtime", "torch", "--no-batching", *(threads or slots)],
                                     "batching off, torch runtime, 1 thread per request, 2 requests at once"),
        f"batched{SUFFIX}": (["--runtime", runtime_b, "--max-batch", "16", "--max-wait-ms", "5", *(threads or slots)],
                             f"batching (max 16, 5 ms{'' if threads else ', 1 thread x 2 batches'}) + {note_b}"),
    }
    # One server at a time (an idle second server still takes memory and background CPU), the arms
    # alternating rep by rep (arm a, arm b, arm a, arm b), so slow drifts of the machine hit both.
    bodies = multipart_bodies(images, HOME / "serve-bench-bodies") if LOADGEN == "wrk" else None
    raw: dict[tuple[str, int], list[dict[str, Any]]] = {}
    lats: dict[tuple[str, int], list[float]] = {}
    rss: dict[str, float] = {}
    for _ in range(REPS):
        for arm, (args, _what) in arms.items():
            server = Server([MODEL], *args)
            try:
                server.wait_ready()
                url = f"{server.url}/v1/models/{MODEL}:predict"
                for c in LEVELS:
                    if bodies is not None:
                        res = load_wrk(url, key, bodies, c, SECONDS)
                    else:
                        res = asyncio.run(load(url, key, images, c, SECONDS))
                    res["loadavg_1m"] = os.getloadavg()[0]
                    lats.setdefault((arm, c), []).extend(res.pop("latencies", []))
                    raw.setdefault((arm, c), []).append(res)
                rss[arm] = server.rss_mb()
            finally:
                server.stop()
    for arm, (args, what) in arms.items():
        levels = [pooled(raw[(arm, c)], lats[(arm, c)]) for c in LEVELS]
        results.put(arm, {"what": what, "runtime": args[1], "levels": levels, "rss_mb": rss[arm]})
    if SKIP_MEMORY and "memory" in results.data["cells"]:
        names: list[str] = []
    else:
        names = lora_models(st)
    memory, own, shared = {}, {}, {}
    for n in (1, 2, 4) if names else ():
        server = Server(names[:n], "--runtime", "torch", *threads)
        try:
            server.wait_ready()
            with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
                for name in names[:n]:
                    for _ in range(2):
                        client.post(f"{server.url}/v1/models/{name}:predict", files=[("files", ("x.png", images[0]))])
                cards = client.get(f"{server.url}/v1/models").json()["models"]
            memory[str(n)] = server.rss_mb()
            own[str(n)] = {card["name"]: card["own_bytes"] for card in cards}
            shared[str(n)] = sorted({str(card["shared_base"]) for card in cards})
        finally:
            server.stop()
    if names:
        per_extra = (memory["4"] - memory["2"]) / 2
        results.put("memory", {
            "rss_mb": memory, "per_extra_lora_l2_rss_mb": per_extra, "own_bytes": own, "shared_bases": shared,
            "per_extra_lora_l2_weights_mb": statistics.fmean(own["4"].values()) / 2**20,
            "single_model_weights_mb": next(iter(own["1"].values())) / 2**20, "models": names,
            "note": "n=1 runs the single model merged; n>=2 share one base copy (PEFT adapters)"})
    cells = results.data["cells"]
    naive32 = next(lv for lv in cells[f"naive-torch{SUFFIX}"]["levels"] if lv["clients"] == 32)
    batched32 = next(lv for lv in cells[f"batched{SUFFIX}"]["levels"] if lv["clients"] == 32)
    naive32_slots = next(lv for lv in cells[f"naive-torch-1x2{SUFFIX}"]["levels"] if lv["clients"] == 32)
    results.put(f"summary{SUFFIX}", {"throughput_ratio_32": batched32["throughput_rps"] / naive32["throughput_rps"],
                                     "throughput_ratio_32_vs_naive_1x2": batched32["throughput_rps"]
                                     / naive32_slots["throughput_rps"],
                                     "batched_p99_over_p50_32": batched32["p99_ms"] / batched32["p50_ms"],
                                     "threads": THREADS or "naive: default (torch: 2); 1x2 and batched: 1 x 2"})
    table = Table(title=f"serve: {MODEL}, 1 image per request, load: {LOADGEN} "
                        f"({results.data['machine'].get('cpu', '')})")
    for col in ("arm", "clients", "req/s", "p50 ms", "p99 ms", "errors", "load avg"):
        table.add_column(col)
    for arm in arms:
        for lv in cells[arm]["levels"]:
            table.add_row(arm, str(lv["clients"]), f"{lv['throughput_rps']:.1f}", f"{lv['p50_ms']:.1f}",
                          f"{lv['p99_ms']:.1f}", str(lv["errors"]), ", ".join(f"{x:.1f}" for x in lv["loadavg_1m"]))
    console = Console()
    console.print(table)
    console.print(json.dumps({k: v for k, v in cells["memory"].items() if k != "own_bytes"}, indent=1))
    console.print(json.dumps(cells[f"summary{SUFFIX}"], indent=1))


if __name__ == "__main__":
    main()
