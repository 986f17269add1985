"""Two gloo processes: FSDP2 (``fully_shard`` per block, then the root) training and checkpoints.

Checks that (1) the parameters really are sharded (DTensors, each rank holding about half),
(2) ``train.strategy: fsdp`` with the real :class:`Trainer` (MoE with the EP-group loss, MTP,
gradient accumulation, clipping) trains like one process on the concatenated batch, (3) a
checkpoint saved under FSDP is the single-process format (safetensors + JSON) and loads into a
plain model and optimizer, and (4) an FSDP run resumed from its checkpoint (sharded load) continues
exactly like the uninterrupted single-process run; (5) the real ``torchrun -m modelfab.pretrain``
launch with ``train.strategy: fsdp`` trains, checkpoints and exports full weights.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file

from modelfab.pretrain.checkpoint import latest_checkpoint, load_checkpoint
from modelfab.pretrain.config import ModelConfig, MoEConfig, TrainConfig
from modelfab.pretrain.data import TokenShards, TokenStream
from modelfab.pretrain.distributed import DistInfo, shutdown
from modelfab.pretrain.export import export_model, load_pretrained
from modelfab.pretrain.logs import read_jsonl
from modelfab.pretrain.model import Transformer
from modelfab.pretrain.trainer import Trainer, build_optimizer

WORLD, B, T, V, STEPS = 2, 2, 12, 60, 4


def _model_cfg() -> ModelConfig:
    moe = MoEConfig(n_experts=4, top_k=2, n_shared=1, expert_hidden=16, balance="ep_group", alpha=0.1)
    return ModelConfig(d_model=16, n_heads=2, n_layers=2, vocab_size=V, ffn="moe", moe=moe, mtp_depth=1)


def _train_cfg(micro_batch: int) -> TrainConfig:
    return TrainConfig(
        seq_len=T, micro_batch=micro_batch, grad_accum=2, max_steps=STEPS, lr=1e-2, warmup_steps=1,
        ckpt_every=2, plots=False, device="cpu", strategy="fsdp", grad_clip=0.5,
    )  # fmt: skip


def _shards(folder: Path) -> TokenShards:
    """One shard of random tokens (a token stream needs no tokenizer)."""
    folder.mkdir(parents=True)
    tokens = np.random.default_rng(0).integers(0, V, 4000).astype(np.uint16)
    tokens.tofile(folder / "shard_00000.bin")
    meta = {"dtype": "uint16", "shards": [{"file": "shard_00000.bin", "tokens": 4000}], "n_tokens": 4000}
    (folder / "meta.json").write_text(json.dumps(meta))
    return TokenShards(folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    info = DistInfo(rank, WORLD)
    _run(rank, info, root)  # its models and DDP wrappers are released when it returns
    shutdown(info)  # barrier, collect, destroy: the product's clean end of a distributed run


def _run(rank: int, info: DistInfo, root: str) -> None:
    stream = TokenStream(TokenShards(Path(root, "shards")), T, seed=0)
    out = Path(root, "fsdp")
    # micro_batch B per rank: together the ranks read the windows one process reads with 2B
    first = Trainer(_model_cfg(), _train_cfg(B), stream, out, info)
    params = list(first.model.parameters())
    sharded = all(type(p).__name__ == "DTensor" for p in params)
    local = sum(p.to_local().numel() for p in params)  # type: ignore[attr-defined]
    total = sum(p.numel() for p in params)
    first.run(stop_after=2)  # checkpoint at step 2, then "crash"
    resumed = Trainer(_model_cfg(), _train_cfg(B), stream, out, info)  # sharded load of step 2
    resumed.run()
    full, _ = resumed.full_state()  # what run_pretraining exports: a collective, full on rank 0
    if rank == 0:
        export_model(resumed.model, None, out / "model", {"world_size": WORLD}, state=full)
        Path(root, "result.json").write_text(
            json.dumps({"sharded": sharded, "local": local, "total": total, "resumed_from": resumed.resumed_from})
        )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fsdp_trains_like_one_process_and_checkpoints_load_into_plain_model(tmp_path: Path) -> None:
    _shards(tmp_path / "shards")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["sharded"] and result["resumed_from"] == 2
    assert result["local"] < 0.6 * result["total"]  # each rank holds about half of every tensor

    # one process, micro-batch 2B = the concatenation of the ranks' batches; no resume
    stream = TokenStream(TokenShards(tmp_path / "shards"), T, seed=0)
    ref = Trainer(_model_cfg(), _train_cfg(WORLD * B), stream, tmp_path / "single")
    assert not ref.fsdp  # one process: strategy fsdp falls back to the plain model
    ref.run()

    fsdp_log = read_jsonl(tmp_path / "fsdp" / "metrics.jsonl")
    ref_log = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in fsdp_log] == list(range(1, STEPS + 1))
    assert [r["resumed_from"] for r in fsdp_log] == [None, None, 2, 2]
    for key in ("loss", "ce", "aux", "mtp", "grad_norm"):
        assert [r[key] for r in fsdp_log] == pytest.approx([r[key] for r in ref_log], rel=1e-4), key
    assert fsdp_log[-1]["expert_load"] == ref_log[-1]["expert_load"]  # counts summed over ranks

    # the FSDP checkpoint is the plain format and loads into a plain model + optimizer
    ckpt = latest_checkpoint(tmp_path / "fsdp" / "checkpoints")
    assert ckpt is not None and ckpt.name == f"step_{STEPS:08d}"
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]
    plain = Transformer(_model_cfg())
    opt = build_optimizer(plain, _train_cfg(B))
    state = load_checkpoint(ckpt, plain, opt)
    assert state["step"] == STEPS and state["cursor"] == STEPS * 2 * WORLD * B
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)
    ref_opt = ref.opt.state_dict()["state"]
    for pid, entry in opt.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(entry[key], ref_opt[pid][key], rtol=1e-3, atol=1e-7, msg=f"{pid}.{key}")
    assert set(load_file(str(ckpt / "model.safetensors"))) == set(ref.model.state_dict())
    exported, _ = load_pretrained(tmp_path / "fsdp" / "model")  # the exported model: full weights too
    for k, v in plain.state_dict().items():
        assert torch.equal(exported.state_dict()[k], v), k


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun not installed")
def test_torchrun_fsdp_two_gloo_ranks(tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["red", "green", "blue", "cyan", "magenta", "yellow"]
    (tmp_path / "corpus").mkdir()
    lines = [f"{rng.choice(words)} {rng.choice(words)} {i % 7}\n" for i in range(2000)]
    (tmp_path / "corpus" / "a.txt").write_text("".join(lines))
    cfg = {
        "name": "fsdp",
        "out_dir": str(tmp_path / "run"),
        "data": {"corpus": str(tmp_path / "corpus"), "tokenizer": {"vocab_size": 280}},
        "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "ffn": "moe",
                  "moe": {"n_experts": 4, "top_k": 2, "expert_hidden": 8, "router": "aux_free", "balance": "none"}},
        "train": {"seq_len": 16, "micro_batch": 2, "grad_accum": 2, "max_steps": 3, "plots": False, "strategy": "fsdp"},
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "modelfab.pretrain",
           "--config", str(tmp_path / "cfg.yaml")]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3]  # logged once, by rank 0
    assert log[-1]["tokens"] == 3 * 2 * 2 * 2 * 16  # steps x micro x accum x world x seq
    model, tok = load_pretrained(tmp_path / "run" / "model")  # full (gathered) weights, not shards
    assert tok is not None and model.cfg.vocab_size == tok.vocab_size
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None
    plain = Transformer(model.cfg)
    load_checkpoint(ckpt, plain, build_optimizer(plain, TrainConfig()))
    for k, v in model.state_dict().items():
        assert torch.equal(plain.state_dict()[k], v), k
    assert any(float(m.router.bias.abs().sum()) > 0 for m in plain.moe_layers())  # router biases (buffers) kept
