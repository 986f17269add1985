"""Tune real L2s from EfficientNet-Lite0 on a small ELPV subset through the CLI, evaluate, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelfab.data.elpv import ELPV_TASKS, elpv_root, read_elpv_labels
from modelfab.data.importers import import_image_folder
from tests.tune_fixtures import make_store

PER_STRATUM = 12  # per (probability, cell type): 8 strata -> ~96 images


@pytest.fixture(scope="module")
def elpv_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MODELFAB_HOME with ``elpv-small`` (a stratified ELPV subset, official-style split) and Lite0."""
    from modelfab.zoo.registry import register_foundation

    tmp = tmp_path_factory.mktemp("elpv-small")
    root = elpv_root()
    labels = read_elpv_labels(root)
    chosen: dict[tuple[float, str], list[str]] = {}
    for key, fields in sorted(labels.items()):
        group = chosen.setdefault((fields["probability"], fields["cell_type"]), [])
        if len(group) < PER_STRATUM:
            group.append(key)
    folder = tmp / "cells"
    folder.mkdir()
    fields = {}
    for keys in chosen.values():
        for key in keys:
            shutil.copy(root / key, folder / Path(key).name)
            fields[Path(key).name] = labels[key]
    store = make_store(tmp / "home")
    import_image_folder(
        store,
        folder,
        "elpv-small",
        label_fields=fields,
        tasks=ELPV_TASKS,
        strata={k: (v["probability"], v["cell_type"]) for k, v in fields.items()},
        stratify_names=["probability", "cell_type"],
    )
    register_foundation(store, "efficientnet-lite0", name="lite0")
    store.close()
    return tmp / "home"


@pytest.fixture()
def elpv_env(elpv_small: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELFAB_HOME", str(elpv_small))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    return elpv_small


def test_tune_evaluate_lineage(cli, elpv_env: Path) -> None:
    res = cli(
        "tune",
        "--base",
        "lite0",
        "--data",
        "elpv-small",
        "--labels",
        "elpv-defect",
        "--shots",
        "8",
        "--image-size",
        "128",
        "--name",
        "cell-defect",
        "--json",
    )
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["method"] == "probe" and info["train_items"] == 16 and 0 <= info["val"]["threshold"] <= 1
    ev = cli("evaluate", "cell-defect", "--data", "elpv-small:test", "--json")
    assert ev.code == 0, ev.err
    summary = json.loads(ev.out)["metrics"]["summary"]
    assert 0.5 < summary["auroc"] <= 1.0  # a real, better-than-chance defect detector from 16 labels
    report = Path(json.loads(ev.out)["files"]["report"])
    assert report.is_file() and "data:image/png;base64" in report.read_text()
    shown = json.loads(cli("models", "show", "cell-defect", "--json").out)
    assert shown["metrics"]["test"]["auroc"] == summary["auroc"]
    tree = json.loads(cli("models", "lineage", "cell-defect", "--json").out)
    assert tree[0]["name"] == "lite0" and tree[0]["children"][0]["dataset"] == "elpv-small@1"
    pool = json.loads(cli("strategies", "list", "--json").out)
    assert next(r for r in pool if r["recipe"] == "probe-linear")["runs"] >= 1
    bad = cli(
        "tune", "--base", "lite0", "--data", "elpv-small", "--labels", "elpv-defect", "--shots", "500", "--name", "x"
    )
    assert bad.code == 2 and "fewer than --shots 500" in bad.err


def test_auto_tries_ranked_recipes(cli, elpv_env: Path) -> None:
    res = cli(
        "tune",
        "--base",
        "lite0",
        "--data",
        "elpv-small",
        "--labels",
        "elpv-strict",
        "--shots",
        "8",
        "--image-size",
        "96",
        "--name",
        "strict-auto",
        "--auto",
        "--top",
        "2",
        "--optuna-trials",
        "1",
        "--budget-s",
        "300",
        "--json",
    )
    assert res.code == 0, res.err
    info = json.loads(res.out)
    recipes = [t["recipe"] for t in info["trials"]]
    assert recipes[:2] == ["probe-linear", "probe-mlp"] and len(recipes) == 3  # two ranked + one Optuna trial
    assert info["recipe"] in ("probe-linear", "probe-mlp")
    assert info["val"]["auroc"] == max(t["score"] for t in info["trials"])


@pytest.mark.timeout(900)
def test_lora_killed_then_resumed(elpv_env: Path) -> None:
    env = {**os.environ, "MODELFAB_HOME": str(elpv_env)}
    args = [
        sys.executable,
        "-m",
        "modelfab.cli.main",
        "tune",
        "--base",
        "lite0",
        "--data",
        "elpv-small",
        "--labels",
        "elpv-defect",
        "--shots",
        "4",
        "--image-size",
        "64",
        "--method",
        "lora",
        "--epochs",
        "6",
        "--name",
        "lora-resume",
    ]
    run_dir = elpv_env / "runs" / "tune" / "lora-resume"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(run_dir.glob("ckpt-*.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the run ended before writing a checkpoint")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = subprocess.run([*args, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["method"] == "lora" and 0.01 < info["trainable_fraction"] < 0.06
    assert info["resumed_from"] >= 1  # continued from the checkpoint of the killed run
    card = subprocess.run(
        [sys.executable, "-m", "modelfab.cli.main", "models", "show", "lora-resume", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    history = json.loads(card.stdout)["card"]["training"]["history"]
    assert history[0]["epoch"] == 1 and len({h["epoch"] for h in history}) == len(history)


def test_tune_with_anomaly_prior_evaluate_export(cli, elpv_env: Path) -> None:
    """`tune --prior gaussian` on real cells: the prior is fitted on the unlabeled train pool, the L2
    evaluates like any other, and its ONNX export (the serving runtime) passes the parity check."""
    res = cli(
        "tune", "--base", "lite0", "--data", "elpv-small", "--labels", "elpv-defect", "--shots", "8",
        "--image-size", "128", "--prior", "gaussian", "--name", "cell-prior", "--json",
    )
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["recipe"] == "probe-prior" and info["train_items"] == 16
    prior = info["prior"]
    assert prior["pool_images"] > info["train_items"]  # the whole train split, labels unused
    assert prior["locations"] == 16 * 16 and 0.0 <= prior["weight"] <= 1.0  # block 4 at 128 px: a 16x16 grid
    ev = cli("evaluate", "cell-prior", "--data", "elpv-small:test", "--json")
    assert ev.code == 0, ev.err
    assert 0.5 < json.loads(ev.out)["metrics"]["summary"]["auroc"] <= 1.0
    exported = cli("export", "cell-prior", "--format", "onnx", "--json")
    assert exported.code == 0, exported.err
    assert json.loads(exported.out)["parity"]["status"] == "passed"
    bad = cli("tune", "--base", "lite0", "--data", "elpv-small", "--method", "lora", "--prior", "gaussian",
              "--name", "y")
    assert bad.code != 0 and "use method probe, not lora" in bad.err
    bad_init = cli("tune", "--base", "lite0", "--data", "elpv-small", "--method", "lora", "--head-init", "linear",
                   "--name", "y")
    assert bad_init.code != 0 and "head_init" in bad_init.err and len(bad_init.err.strip().splitlines()) == 1
