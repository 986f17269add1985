"""Two gloo processes: DDP training with the EP-group balancing loss.

Checks (1) the EP-group loss on each rank is the Switch form with per-expert counts summed over
both ranks, (2) ranks stay identical, (3) 2-rank DDP + EP-group loss trains exactly like one
process on the concatenated batch with the Switch loss (the means agree, so the gradients do),
and (4) the real ``torchrun -m modelfab.pretrain`` launch path works.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file, save_file

from modelfab.pretrain.config import ModelConfig, MoEConfig, TrainConfig
from modelfab.pretrain.distributed import DistInfo, set_ep_group, shutdown, update_router_biases, wrap_ddp
from modelfab.pretrain.model import Transformer
from modelfab.pretrain.moe import MoE
from modelfab.pretrain.router import switch_loss
from modelfab.pretrain.trainer import build_optimizer

STEPS, WORLD, B, T = 3, 2, 4, 12


def _model_cfg(balance: str) -> ModelConfig:
    moe = MoEConfig(n_experts=4, top_k=1, n_shared=1, expert_hidden=16, balance=balance, alpha=0.1)  # type: ignore[arg-type]
    return ModelConfig(d_model=16, n_heads=2, n_layers=2, vocab_size=50, ffn="moe", moe=moe)


def _global_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    return [torch.randint(0, 50, (WORLD * B, T + 1), generator=g) for _ in range(STEPS)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    info = DistInfo(rank, WORLD)
    _run(rank, info, out_dir)  # its models and DDP wrappers are released when it returns
    shutdown(info)  # barrier, collect, destroy: the product's clean end of a distributed run


def _run(rank: int, info: DistInfo, out_dir: str) -> None:
    # (1) one MoE layer: local EP-group loss == Switch form with the group's summed counts
    torch.manual_seed(0)
    layer = MoE(16, MoEConfig(n_experts=4, top_k=2, expert_hidden=8, balance="ep_group"))
    layer.ep_group = dist.group.WORLD
    xs = torch.randn(WORLD, 10, 16, generator=torch.Generator().manual_seed(1)) * 2
    layer(xs[rank][None])
    with torch.no_grad():
        routings = [layer.router(xs[r]) for r in range(WORLD)]
    group_counts = sum(r.counts for r in routings)
    expected = switch_loss(routings[rank].probs, group_counts, 1e-2)
    local_only = switch_loss(routings[rank].probs, routings[rank].counts, 1e-2)
    ep_ok = torch.allclose(layer.aux_loss, expected, rtol=1e-6, atol=0)
    ep_differs = not torch.allclose(layer.aux_loss, local_only, rtol=1e-4, atol=0)

    # (2)+(3) DDP training with the ep_group loss
    torch.manual_seed(0)
    model = Transformer(_model_cfg("ep_group"))
    set_ep_group(model, dist.group.WORLD)
    net = wrap_ddp(model, info, "cpu")
    opt = build_optimizer(model, TrainConfig(lr=1e-2))
    losses = []
    for batch in _global_batches():
        rows = batch[rank * B : (rank + 1) * B]
        out = net(rows[:, :-1], rows[:, 1:])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        update_router_biases(model, info)
        loss = out.loss.detach().clone()
        dist.all_reduce(loss)
        losses.append(float(loss) / WORLD)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    same = all(torch.equal(g, gathered[0]) for g in gathered)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out_dir}/ddp.safetensors")
        Path(out_dir, "result.json").write_text(
            json.dumps({"ep_ok": ep_ok, "ep_differs": ep_differs, "same": same, "losses": losses})
        )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ddp_with_ep_group_loss_equals_single_process_switch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ep_ok"] and result["ep_differs"] and result["same"]

    torch.manual_seed(0)
    ref = Transformer(_model_cfg("switch"))
    opt = build_optimizer(ref, TrainConfig(lr=1e-2))
    ref_losses = []
    for batch in _global_batches():  # one process, the whole global batch, Switch loss over it
        out = ref(batch[:, :-1], batch[:, 1:])
        assert out.loss is not None
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        ref_losses.append(float(out.loss.detach()))
    assert result["losses"] == pytest.approx(ref_losses, rel=1e-5)
    ddp_state = load_file(str(tmp_path / "ddp.safetensors"))
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)


def _corpus(folder: Path) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    words = ["red", "green", "blue", "cyan", "magenta", "yellow"]
    (folder / "a.txt").write_text("".join(f"{rng.choice(words)} {rng.choice(words)} {i % 7}\n" for i in range(3000)))
    return folder


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")  # fmt: skip
def test_torchrun_two_gloo_ranks(tmp_path: Path) -> None:
    cfg = {
        "name": "ddp",
        "out_dir": str(tmp_path / "run"),
        "data": {"corpus": str(_corpus(tmp_path / "corpus")), "tokenizer": {"vocab_size": 280}},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "ffn": "moe",
                  "moe": {"n_experts": 4, "top_k": 2, "expert_hidden": 8, "balance": "ep_group"}},
        "train": {"seq_len": 16, "micro_batch": 2, "grad_accum": 2, "max_steps": 4, "ckpt_every": 2, "plots": False},
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "modelfab.pretrain", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]  # logged once, by rank 0
    assert lines[-1]["tokens"] == 4 * 2 * 2 * 2 * 16  # steps x micro x accum x world x seq
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "model" / "card.json").read_text())["world_size"] == 2
