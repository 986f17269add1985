"""Real processes: the console script, two writers at once, and an import killed midway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_image

MODELFAB = [sys.executable, "-m", "modelfab.cli.main"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFAB_")}
    env["MODELFAB_HOME"] = str(home)
    return env


def test_console_script_errors_and_json(home: Path, image_folder: Path) -> None:
    script = Path(sys.executable).parent / "modelfab"
    ok = subprocess.run(
        [str(script), "data", "import", str(image_folder), "--name", "p", "--json"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["dataset"] == "p@1"
    bad = subprocess.run(
        [str(script), "data", "show", "nope"], env=_env(home), capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: unknown dataset 'nope'; known: p"


def test_two_writers_at_once(home: Path, tmp_path: Path) -> None:
    """Two processes import into the same SQLite store at the same moment: both succeed."""
    tables = []
    for n in range(2):
        path = tmp_path / f"t{n}.csv"
        path.write_text("text,label\n" + "".join(f"writer {n} row {i},{i % 2}\n" for i in range(3000)))
        tables.append(path)
    procs = [
        subprocess.Popen(
            [*MODELFAB, "data", "import", str(t), "--name", "shared", "--json"],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in tables
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    versions = sorted(json.loads(o[0])["dataset"] for o in outs)
    assert versions == ["shared@1", "shared@2"]
    info = subprocess.run(
        [*MODELFAB, "data", "show", "shared", "--json"], env=_env(home), capture_output=True, text=True, timeout=60
    )
    assert [v["items"] for v in json.loads(info.stdout)["versions"]] == [3000, 3000]


def test_import_killed_midway_leaves_no_version(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(1500):
        write_image(root / "x" / f"{i:05d}.png", size=(96, 96), seed=i)
    env = _env(home)
    proc = subprocess.Popen(
        [*MODELFAB, "data", "import", str(root), "--name", "big"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it is storing artifacts, then kill it hard
        line = proc.stderr.readline()
        if line.startswith("checking big:") and line.split()[-1].startswith("1500/"):
            break
        if not line and proc.poll() is not None:
            pytest.fail("import ended before it could be killed")
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    listed = subprocess.run([*MODELFAB, "data", "list", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []  # no partial version is visible
    runs = json.loads(
        subprocess.run(
            [*MODELFAB, "runs", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert [r["status"] for r in runs] == ["running"]  # the killed run stays visibly unfinished
    again = subprocess.run(
        [*MODELFAB, "data", "import", str(root), "--name", "big", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["items"] == 1500
