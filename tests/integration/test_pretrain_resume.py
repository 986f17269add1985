"""SIGKILL a real training process, resume it, and get exactly the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

WORDS = ["alpha", "beta", "gamma", "delta", "token", "expert", "router", "shard", "cache", "layer"]


def _corpus(folder: Path) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for i in range(3):
        lines = [f"{rng.choice(WORDS)} = {rng.choice(WORDS)}({j % 9})\n" for j in range(400)]
        (folder / f"f{i}.py").write_text("".join(lines))
    return folder


def _config(tmp: Path, name: str, corpus: Path) -> Path:
    cfg = {
        "name": name,
        "out_dir": str(tmp / name),
        "data": {"corpus": str(corpus), "tokenizer": {"vocab_size": 300}},
        "model": {
            "d_model": 32, "n_layers": 2, "n_heads": 4, "norm": "dssn", "init": "tiny", "mtp_depth": 1,
            "ffn": "moe", "moe": {"router": "aux_free", "balance": "switch", "n_experts": 4, "expert_hidden": 16},
        },
        "train": {"seq_len": 32, "micro_batch": 4, "grad_accum": 2, "max_steps": 400, "warmup_steps": 5,
                  "ckpt_every": 4, "plots": False},
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _losses(log: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines())}


def _run(cfg: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "modelfab.pretrain", "--config", str(cfg), *args]
    subprocess.run(cmd, check=True, env=_env(), timeout=240, capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    ref_cfg, victim_cfg = _config(tmp_path, "ref", corpus), _config(tmp_path, "victim", corpus)
    _run(ref_cfg, "--stop-after", "16")
    ref = _losses(tmp_path / "ref" / "metrics.jsonl")
    assert sorted(ref) == list(range(1, 17))

    log = tmp_path / "victim" / "metrics.jsonl"
    cmd = [sys.executable, "-m", "modelfab.pretrain", "--config", str(victim_cfg)]
    err = (tmp_path / "victim.err").open("w")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 9:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    err.close()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended before it was killed: {(tmp_path / 'victim.err').read_text()[-2000:]}"
    )
    killed = _losses(log)
    assert 9 <= max(killed) < 400
    pointer = json.loads((tmp_path / "victim" / "checkpoints" / "latest.json").read_text())
    ckpt_step = pointer["step"]
    assert 8 <= ckpt_step <= max(killed)

    _run(victim_cfg, "--stop-after", "16")
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    resumed = [r for r in lines if r["resumed_from"] == ckpt_step]
    assert [r["step"] for r in resumed] == list(range(ckpt_step + 1, 17))
    for r in resumed:  # bit-identical losses after the resume
        assert r["loss"] == ref[r["step"]], r["step"]
    for step, loss in killed.items():  # and before the kill
        if step <= 16:
            assert loss == ref[step]
