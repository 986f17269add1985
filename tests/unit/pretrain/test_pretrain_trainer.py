"""The training loop on real data: schedule, learning, logs, accumulation and in-process resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pretrain_helpers import tiny_run

from modelfab.pretrain.config import TrainConfig
from modelfab.pretrain.logs import SpikeCounter, read_jsonl
from modelfab.pretrain.run import run_pretraining
from modelfab.pretrain.trainer import lr_at


def test_warmup_cosine_schedule() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=14)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg) == 1.0
    assert lr_at(9, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(14, cfg) == pytest.approx(0.1) and lr_at(100, cfg) == pytest.approx(0.1)


def test_spike_counter() -> None:
    sc = SpikeCounter(factor=1.5, warmup=3)
    flags = [sc.update(v) for v in [5.0, 4.0, 10.0, 3.0, 3.0, 9.0, 3.0, float("nan")]]
    assert flags == [False, False, False, False, False, True, False, True]
    assert sc.spikes == 2


@pytest.mark.timeout(120)
def test_training_learns_and_logs(corpus: Path, tmp_path: Path) -> None:
    moe = {"ffn": "moe", "mtp_depth": 1, "moe": {"n_experts": 4, "top_k": 2, "expert_hidden": 16, "stat_devices": 2}}
    cfg = tiny_run(tmp_path / "run", corpus, moe, max_steps=20, lr=1e-2, plots=True)
    res = run_pretraining(cfg)
    recs = read_jsonl(res.train.log_path)
    assert [r["step"] for r in recs] == list(range(1, 21))
    first, last = recs[0], recs[-1]
    assert last["ce"] < first["ce"] - 1.0  # it learns
    for key in ("loss", "ce", "aux", "mtp", "lr", "grad_norm", "spikes", "tokens_per_s", "max_mean_load", "imbalance"):
        assert key in last and math.isfinite(float(last[key])), key
    assert len(last["expert_load"]) == 2 and sum(last["expert_load"][0]) == 4 * 32 * 2
    assert last["max_mean_load"] >= 1.0 and "mfu" not in last  # MFU only with a known GPU peak
    assert {p.name for p in res.train.plots} == {"loss.png", "grad_norm.png", "expert_load.png"}
    assert (res.model_dir / "model.safetensors").exists() and (res.model_dir / "tokenizer.json").exists()
    card = json.loads((res.model_dir / "card.json").read_text())
    assert card["tier"] == "L0" and card["steps"] == 20


@pytest.mark.timeout(120)
def test_in_process_resume_matches_uninterrupted(corpus: Path, tmp_path: Path) -> None:
    model = {"ffn": "moe", "moe": {"router": "aux_free", "balance": "none", "n_experts": 4, "expert_hidden": 16}}
    ref = run_pretraining(tiny_run(tmp_path / "ref", corpus, model, ckpt_every=3))
    cfg = tiny_run(tmp_path / "split", corpus, model, ckpt_every=3)
    run_pretraining(cfg, stop_after=6)
    resumed = run_pretraining(cfg)
    a = [r["loss"] for r in read_jsonl(ref.train.log_path)]
    b = [r["loss"] for r in read_jsonl(resumed.train.log_path)]
    assert a == b and len(a) == 12
    assert read_jsonl(resumed.train.log_path)[6]["resumed_from"] == 6


@pytest.mark.timeout(120)
def test_grad_accumulation_matches_bigger_batch(corpus: Path, tmp_path: Path) -> None:
    big = run_pretraining(tiny_run(tmp_path / "big", corpus, micro_batch=8, grad_accum=1, max_steps=4))
    acc = run_pretraining(tiny_run(tmp_path / "acc", corpus, micro_batch=4, grad_accum=2, max_steps=4))
    la = [r["loss"] for r in read_jsonl(big.train.log_path)]
    lb = [r["loss"] for r in read_jsonl(acc.train.log_path)]
    assert la == pytest.approx(lb, rel=1e-5)


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_training_logs_mfu(corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_run(tmp_path / "gpu", corpus, {"attention": "mla", "ffn": "moe"}, device="cuda", gpu_peak_tflops=100.0)
    res = run_pretraining(cfg)
    last = read_jsonl(res.train.log_path)[-1]
    assert 0 < last["mfu"] < 1 and math.isfinite(last["loss"])
