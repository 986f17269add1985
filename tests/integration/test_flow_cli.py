"""Pipelines through the CLI on generated cells and a real Lite0: the whole chain, the cache, the label and
approval gates, bad specs rejected before anything runs, a SIGKILL during tune then resume, a Ray head."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import free_port, write_cell

CHAIN = """\
name: cells-chain
params:
  base: lite0-64
  root: {root}
steps:
  history:
    uses: import
    with: {{source: folder, path: "${{{{ params.root }}}}/cells", name: cells}}
  batch:
    uses: import
    with: {{source: folder, path: "${{{{ params.root }}}}/batch", name: batch, unlabeled: true}}
  screen:
    uses: screen
    with:
      backbone: ${{{{ params.base }}}}
      normal: ${{{{ steps.history.outputs.dataset }}}}
      data: ${{{{ steps.batch.outputs.dataset }}}}
      calibration: "${{{{ steps.history.outputs.dataset }}}}:calibration"
      target_recall: 0.7
      confidence: 0.9
      config: {{image_size: 64, layers: [block4, block10]}}
  label:
    uses: label
    with: {{data: "${{{{ steps.screen.outputs.dataset }}}}", oracle: true}}
  tune:
    uses: tune
    needs: [label]
    with: {{base: "${{{{ params.base }}}}", data: "${{{{ steps.history.outputs.dataset }}}}", name: cells-l2}}
  evaluate:
    uses: evaluate
    with: {{model: "${{{{ steps.tune.outputs.model }}}}", data: "${{{{ steps.history.outputs.dataset }}}}:test"}}
  export:
    uses: export
    with: {{model: "${{{{ steps.tune.outputs.model }}}}"}}
  approve:
    uses: approve
    with:
      model: ${{{{ steps.tune.outputs.model }}}}
      metrics: ${{{{ steps.evaluate.outputs.metrics }}}}
      rule: "metrics.test.auroc >= {bar}"
      alias: production
  deploy:
    uses: deploy
    needs: [export]
    with: {{model: "${{{{ steps.approve.outputs.model }}}}"}}
"""


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli) -> Path:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    for folder, counts in (("cells", (("good", 40), ("ng", 54))), ("batch", (("good", 30), ("ng", 10)))):
        for cls, n in counts:
            for i in range(n):
                write_cell(tmp_path / folder / cls / f"{cls}{i:03d}.png", cls == "ng", rng)
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    assert cli("models", "add-foundation", "efficientnet-lite0", "--as", "lite0-64", "--image-size", "64").code == 0
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def steps_by_name(out: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {s["name"]: s for s in json.loads(out)["steps"]}


@pytest.mark.timeout(600)
def test_chain_runs_then_is_cached(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    spec = write(env / "chain.yaml", CHAIN.format(root=env, bar=0.6))
    res = cli("run", str(spec), "--json")
    assert res.code == 0, res.err
    first = json.loads(res.out)
    steps = steps_by_name(res.out)
    assert first["status"] == "succeeded" and all(s["status"] == "succeeded" for s in steps.values())
    screened = steps["screen"]["outputs"]
    assert screened["dataset"] == "batch@2" and 0 < screened["filtered_fraction"] < 1
    assert steps["label"]["outputs"]["dataset"] == "batch@3" and steps["label"]["meta"]["record"] == {"oracle": True}
    assert steps["evaluate"]["outputs"]["metrics"]["test"]["auroc"] >= 0.6
    assert steps["export"]["outputs"]["parity"]["status"] == "passed"
    assert steps["deploy"]["outputs"]["runtime"] == "onnxruntime"
    model = steps["tune"]["outputs"]["model"]
    shown = json.loads(cli("models", "show", "cells-l2@production", "--json").out)
    assert shown["id"] == model
    deps = json.loads(cli("deployments", "list", "--json").out)
    assert any(d["id"] == steps["deploy"]["outputs"]["deployment"] and d["status"] == "ready" for d in deps)
    # lineage: the run record holds every step's outputs
    run = json.loads(cli("runs", "show", first["run"], "--json").out)
    assert run["kind"] == "pipeline" and run["outputs"]["tune"]["model"] == model and len(run["steps"]) == 9

    res = cli("run", str(spec), "--json")
    assert res.code == 0, res.err
    again = steps_by_name(res.out)
    cached = {n for n, s in again.items() if s["status"] == "cached"}
    assert cached == set(again) - {"approve", "deploy"}  # gates and deployments always run
    assert again["tune"]["outputs"]["model"] == model
    assert again["tune"]["meta"]["cached_from"]["run"] == first["run"]
    # --no-cache runs the import again (a new identical version is not created: content hashes match)
    res = cli("run", str(spec), "--no-cache", "--set", "steps.tune.with.name=cells-l2b", "--json")
    assert res.code == 0, res.err
    third = steps_by_name(res.out)
    assert third["history"]["status"] == "succeeded" and third["history"]["outputs"]["dataset"] == "cells@1"
    assert third["tune"]["outputs"]["model"] != model
    logs = cli("runs", "logs", first["run"], "--step", "screen")
    assert logs.code == 0 and "need labeling" in logs.out


def test_failed_rule_skips_what_follows(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    text = CHAIN.format(root=env, bar=1.01)
    text = text[: text.index("  screen:")] + text[text.index("  tune:") :].replace("    needs: [label]\n", "")
    res = cli("run", str(write(env / "strict.yaml", text)), "--json")
    assert res.code == 1
    assert "step approve failed: approval rule failed" in res.err and "metrics.test.auroc" in res.err
    steps = steps_by_name(res.out)
    assert steps["approve"]["status"] == "failed" and steps["deploy"]["status"] == "skipped"
    assert steps["export"]["status"] == "succeeded"  # an independent branch still ran


GATES = """\
name: gates
steps:
  data:
    uses: import
    with: {{source: folder, path: "{root}/batch", name: pool, unlabeled: true}}
  label:
    uses: label
    with: {{data: "${{{{ steps.data.outputs.dataset }}}}"}}
  approve:
    uses: approve
    needs: [label]
    with: {{model: lite0-64, manual: true, alias: reviewed}}
"""


def test_label_gate_and_manual_approval(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("run", str(write(env / "gates.yaml", GATES.format(root=env))), "--json")
    assert res.code == 3, res.err  # waiting for a person
    run_id = json.loads(res.out)["run"]
    steps = steps_by_name(res.out)
    assert steps["label"]["status"] == "waiting" and steps["approve"]["status"] == "pending"
    assert "modelfab data import-labels pool@1" in res.err
    sheet = Path(res.err.split("column of ")[1].split(",")[0])
    assert json.loads(cli("runs", "show", run_id, "--json").out)["status"] == "waiting"

    res = cli("runs", "resume", run_id, "--json")  # nothing imported yet: still waiting
    assert res.code == 3
    rows = list(csv.DictReader(sheet.open()))
    for row in rows:
        row["label"] = row["key"].split("/")[0]
    with sheet.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli("data", "import-labels", "pool@1", str(sheet)).code == 0
    res = cli("runs", "resume", run_id, "--json")
    assert res.code == 3, res.err
    steps = steps_by_name(res.out)
    assert steps["label"]["outputs"]["dataset"] == "pool@2" and steps["approve"]["status"] == "waiting"
    assert f"modelfab runs approve {run_id}" in res.err

    res = cli("runs", "approve", run_id, "--by", "alice", "--comment", "looks fine", "--json")
    assert res.code == 0, res.err
    steps = steps_by_name(res.out)
    decision = steps["approve"]["meta"]["approval"]
    assert decision["by"] == "alice" and decision["approved"] and decision["at"]
    assert steps["approve"]["outputs"]["approved_by"] == "alice"
    assert json.loads(cli("models", "show", "lite0-64@reviewed", "--json").out)["name"] == "lite0-64"
    assert steps["data"]["meta"]["attempts"] == 1  # never repeated across three resumes
    res = cli("runs", "resume", run_id)
    assert res.code == 2 and "already succeeded" in res.err


def test_rejection_and_cancel(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    text = GATES.format(root=env).replace('    with: {data: "${{ steps.data.outputs.dataset }}"}',
                                          '    with: {data: "${{ steps.data.outputs.dataset }}", oracle: true}')
    spec = write(env / "gates.yaml", text)
    res = cli("run", str(spec), "--json")
    assert res.code == 3
    run_id = json.loads(res.out)["run"]
    res = cli("runs", "approve", run_id, "--by", "bob", "--reject", "--comment", "not this one")
    assert res.code == 1 and "rejected by bob" in res.err
    res = cli("run", str(spec), "--json")
    assert res.code == 3
    other = json.loads(res.out)["run"]
    assert cli("runs", "cancel", other).code == 0
    shown = json.loads(cli("runs", "show", other, "--json").out)
    assert shown["status"] == "cancelled" and {s["status"] for s in shown["steps"]} == {"cached", "cancelled"}


BAD = {
    "broken YAML at line 4, column 1": "name: bad\nsteps:\n  a: {uses: import, with: {source: folder\n",
    "steps.a.uses (line 3): unknown step 'importt'": "name: bad\nsteps:\n  a: {uses: importt}\n",
    "cycle a -> b -> a": "name: bad\nsteps:\n  a: {uses: label, needs: [b], with: {data: x@1}}\n"
    "  b: {uses: label, needs: [a], with: {data: x@1}}\n",
    "steps.b.with.data (line 6): step 'a' (import) has no output 'model'": "name: bad\nsteps:\n  a:\n    uses: import\n"
    "    with: {source: elpv, name: e}\n  b: {uses: label, with: {data: '${{ steps.a.outputs.model }}'}}\n",
    "type mismatch: steps.a.outputs.dataset is a dataset, but parameter 'model'": "name: bad\nsteps:\n  a:\n"
    "    uses: import\n    with: {source: elpv, name: e}\n"
    "  b: {uses: export, with: {model: '${{ steps.a.outputs.dataset }}'}}\n",
    "steps.a.with.data (line 5): unknown dataset 'nowhere'": "name: bad\nsteps:\n  a:\n    uses: label\n"
    "    with: {data: nowhere@1}\n",
    "steps.a.with.model (line 3): unknown model": "name: bad\nsteps:\n"
    "  a: {uses: export, with: {model: no-such-model}}\n",
}


def test_bad_pipelines_rejected_before_anything_runs(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    for i, (expected, text) in enumerate(BAD.items()):
        res = cli("run", str(write(env / f"bad{i}.yaml", text)))
        assert res.code == 2, (expected, res.err)
        assert expected in res.err and len(res.err.strip().splitlines()) == 1, (expected, res.err)
    assert cli("run", str(env / "missing.yaml")).code == 2
    res = cli("run", str(write(env / "ok.yaml", GATES.format(root=env))), "--executor", "slurm")
    assert res.code == 2 and "unknown executor 'slurm'" in res.err
    assert json.loads(cli("runs", "list", "--kind", "pipeline", "--json").out) == []
    assert json.loads(cli("data", "list", "--json").out) == []


KILL = """\
name: kill
steps:
  data:
    uses: import
    with: {{source: folder, path: "{root}/cells", name: cells}}
  tune:
    uses: tune
    with:
      base: lite0-64
      data: ${{{{ steps.data.outputs.dataset }}}}
      name: killed-l2
      method: full
      config: {{epochs: 6, patience: 6, image_size: 64, batch_size: 8}}
"""


@pytest.mark.timeout(600)
def test_sigkill_during_tune_then_resume(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    spec = write(env / "kill.yaml", KILL.format(root=env))
    proc = subprocess.Popen([sys.executable, "-m", "modelfab.cli.main", "run", str(spec)], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pipelines = env / "home" / "runs" / "pipelines"
    deadline = time.monotonic() + 300
    while not list(pipelines.glob("*/tune/checkpoints/ckpt-*.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the pipeline ended before the tune step wrote a checkpoint")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    run_id = next(pipelines.iterdir()).name
    shown = json.loads(cli("runs", "show", run_id, "--json").out)
    assert shown["status"] == "running"  # nobody could record the kill
    assert {s["name"]: s["status"] for s in shown["steps"]} == {"data": "succeeded", "tune": "running"}
    res = cli("runs", "resume", run_id, "--json")
    assert res.code == 0, res.err
    steps = steps_by_name(res.out)
    assert steps["data"]["meta"]["attempts"] == 1  # not repeated
    assert steps["tune"]["meta"]["attempts"] == 2 and steps["tune"]["meta"]["record"]["resumed_from_epoch"] >= 1
    assert json.loads(cli("models", "show", "killed-l2", "--json").out)["id"] == steps["tune"]["outputs"]["model"]


@pytest.mark.timeout(300)
def test_ray_head_runs_independent_steps(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    ray = Path(sys.executable).parent / "ray"
    port = free_port()
    ray_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="mfray-", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    start = subprocess.run([str(ray), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                            f"--temp-dir={temp}", "--disable-usage-stats"],
                           env=ray_env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        text = GATES.format(root=env).replace('    with: {data: "${{ steps.data.outputs.dataset }}"}',
                                              '    with: {data: "${{ steps.data.outputs.dataset }}", oracle: true}')
        text = text[: text.index("  approve:")] + (
            f"  other:\n    uses: import\n    with: {{source: folder, path: \"{env}/cells\", name: cells}}\n"
            "    resources: {cpus: 1, memory: 200MB}\n"
        )
        res = cli("run", str(write(env / "ray.yaml", text)), "--executor", "ray", "--address", "auto",
                  "--json")  # fmt: skip
        assert res.code == 0, res.err
        steps = steps_by_name(res.out)
        assert {s["status"] for s in steps.values()} == {"succeeded"}
        pids = {s["meta"]["pid"] for s in steps.values()}
        assert os.getpid() not in pids  # every step ran in a Ray worker, not in the driver
        assert steps["label"]["outputs"]["dataset"] == "pool@2" and steps["other"]["outputs"]["items"] == 94
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=ray_env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


L1_CHAIN = """\
name: l1-chain
steps:
  data:
    uses: import
    with: {{source: folder, path: "{root}/cells", name: cells}}
  adapt:
    uses: adapt
    with:
      base: lite0-64
      data: ${{{{ steps.data.outputs.dataset }}}}
      name: cells-l1
      config: {{steps: 4, batch_size: 8, cache_views: 0, resolution: 64, checkpoint_every: 2, split: train}}
  tune:
    uses: tune
    with:
      base: ${{{{ steps.adapt.outputs.model }}}}
      data: ${{{{ steps.data.outputs.dataset }}}}
      name: cells-l2
  export:
    uses: export
    with: {{model: "${{{{ steps.tune.outputs.model }}}}"}}
  int8:
    uses: extract
    with: {{model: "${{{{ steps.export.outputs.model }}}}", method: quantize, require_parity: false}}
"""


@pytest.mark.timeout(600)
def test_l1_chain_adapt_tune_extract(cli, env: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("run", str(write(env / "l1.yaml", L1_CHAIN.format(root=env))), "--json")
    assert res.code == 0, res.err
    steps = steps_by_name(res.out)
    l1, l2 = steps["adapt"]["outputs"]["model"], steps["tune"]["outputs"]["model"]
    shown = json.loads(cli("models", "show", l2, "--json").out)
    assert shown["parent_id"] == l1 and shown["tier"] == "L2"
    assert json.loads(cli("models", "show", l1, "--json").out)["tier"] == "L1"
    int8 = json.loads(cli("models", "show", steps["int8"]["outputs"]["model"], "--json").out)
    assert int8["parent_id"] == steps["export"]["outputs"]["model"]
    assert steps["int8"]["outputs"]["parity"]["status"] in ("passed", "failed")  # recorded either way
    bad = L1_CHAIN.format(root=env).replace("resolution: 64", "resolution: 64, epochs: 3")
    res = cli("run", str(write(env / "l1bad.yaml", bad)), "--json")
    assert res.code == 2 and "steps.adapt.with.config (line 12)" in res.err
    assert "unknown adapt field(s) epochs" in res.err
