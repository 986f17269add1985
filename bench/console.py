"""Console benchmark on a real store: time for each view to render in headless Chromium, with screenshots.

Serves `modelfab console` (a real uvicorn process) over a *copy* of a store -- by default the one the
demo pipeline wrote (`bench/.home-pipeline/example-demo`, made by `bench/pipeline.py --arms example-demo`,
or `~/.modelfab` after `make demo`) -- creates an engineer key, signs in and opens every tab, timing
from navigation to the view's content. Each view is opened `--repeats` times; the median is reported.

    .venv/bin/python bench/console.py [--home DIR] [--repeats 3] [--screenshots docs/console]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "console.json"
CHROMIUM = "/usr/bin/chromium"
# tab -> a selector that exists once the view has rendered its content
VIEWS = {
    "models": "#view .split",
    "datasets": "#view section.card table",
    "label": "#view form, #view section.card",
    "runs": "#view section.card table",
    "reports": "#view section.card",
    "prompts": "#view #tpl-samples",
    "ranking": "#view section.card",
}


def default_home() -> Path:
    demo = ROOT / "bench" / ".home-pipeline" / "example-demo"
    return demo if demo.exists() else Path.home() / ".modelfab"


def serve(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MODELFAB_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MODELFAB_DB", None)
    proc = subprocess.Popen([sys.executable, "-m", "modelfab.cli.main", "console", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/console/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the console did not start within 60 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=default_home())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    if not (args.home / "modelfab.db").exists():
        raise SystemExit(f"no store at {args.home}: run `make demo` or `bench/pipeline.py --arms example-demo` first")
    from playwright.sync_api import sync_playwright

    from modelfab.core.machine import describe_machine
    from modelfab.serve.auth import create_key
    from modelfab.store.models import list_models
    from modelfab.store.store import open_store

    tmp = Path(tempfile.mkdtemp(prefix="modelfab-console-bench-"))
    home = tmp / "home"
    shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("runs", "cache"))
    os.environ["MODELFAB_HOME"] = str(home)
    store = open_store()
    _, secret = create_key(store, "engineer", name="bench")
    counts = {"models": len(list_models(store))}
    store.close()
    proc = serve(home, args.port)
    timings: dict[str, list[float]] = {v: [] for v in VIEWS}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"http://127.0.0.1:{args.port}/console/")
            page.fill("#key", secret)
            page.click("#signin button[type=submit]")
            page.wait_for_selector("#tabs a[data-tab=models]", state="visible", timeout=60_000)
            for _ in range(args.repeats):
                for view, selector in VIEWS.items():
                    page.goto(f"http://127.0.0.1:{args.port}/console/#/reports")  # leave, then come back
                    page.wait_for_selector("#view section.card", timeout=60_000)
                    start = time.perf_counter()
                    page.click(f"#tabs a[data-tab={view}]")
                    page.wait_for_selector(selector, timeout=60_000)
                    timings[view].append(time.perf_counter() - start)
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                for view in ("models", "datasets", "runs"):
                    page.click(f"#tabs a[data-tab={view}]")
                    page.wait_for_selector(VIEWS[view], timeout=60_000)
                    if view == "models":
                        page.locator(".tree a").last.click()
                        page.wait_for_timeout(500)
                    if view in ("datasets", "runs"):
                        page.locator("#view table a").first.click()
                        page.wait_for_timeout(1500)
                    page.screenshot(path=str(args.screenshots / f"demo-{view}.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    cells = {v: {"median_ms": round(1000 * statistics.median(t), 1), "max_ms": round(1000 * max(t), 1),
                 "repeats": len(t)} for v, t in timings.items()}
    result = {"bench": "console", "machine": describe_machine(), "store": str(args.home), "registry": counts,
              "seeds": [], "split_hash": None, "cells": cells}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    table = Table(title=f"console views on {args.home.name} ({counts['models']} models), headless Chromium")
    for col in ("view", "median (ms)", "max (ms)"):
        table.add_column(col)
    for view, c in cells.items():
        table.add_row(view, str(c["median_ms"]), str(c["max_ms"]))
    Console().print(table)


if __name__ == "__main__":
    main()
