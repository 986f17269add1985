"""Checkpoints: safetensors + JSON only, exact round trip, atomic pointer, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from modelfab.pretrain.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from modelfab.pretrain.config import ModelConfig, MoEConfig, TrainConfig
from modelfab.pretrain.model import Transformer
from modelfab.pretrain.trainer import build_optimizer


def _trained(seed: int = 0) -> tuple[Transformer, torch.optim.AdamW]:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=16, n_heads=2, n_layers=1, vocab_size=32, ffn="moe",
        moe=MoEConfig(n_experts=4, top_k=2, router="aux_free", balance="none", expert_hidden=8),
    )  # fmt: skip
    model = Transformer(cfg)
    opt = build_optimizer(model, TrainConfig())
    for _ in range(2):
        idx = torch.randint(0, 32, (2, 8))
        model(idx, idx).loss.backward()  # type: ignore[union-attr]
        opt.step()
        opt.zero_grad()
        for m in model.moe_layers():
            m.router.update_bias()
    return model, opt


def test_roundtrip_is_exact_and_pickle_free(tmp_path: Path) -> None:
    model, opt = _trained()
    path = save_checkpoint(tmp_path, 2, model, opt, {"cursor": 16, "note": "x"})
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optim.safetensors", "state.json"]
    for f in path.iterdir():
        assert not f.read_bytes().startswith(b"\x80")  # no pickle protocol header
    load_file(str(path / "optim.safetensors"))  # plain safetensors
    state = json.loads((path / "state.json").read_text())
    assert state["cursor"] == 16 and state["step"] == 2

    fresh, fresh_opt = _trained(seed=1)
    restored = load_checkpoint(latest_checkpoint(tmp_path) or path, fresh, fresh_opt)
    assert restored["note"] == "x"
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert any(float(m.router.bias.abs().sum()) > 0 for m in fresh.moe_layers())  # buffers too
    sa, sb = opt.state_dict(), fresh_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for pid, entry in sa["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, sb["state"][pid][key]), (pid, key)


def test_latest_pointer_and_pruning(tmp_path: Path) -> None:
    model, opt = _trained()
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000002", "step_00000003"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
    # a half-written checkpoint (killed writer) is invisible: latest still points at the complete one
    (tmp_path / ".tmp-step_00000004").mkdir()
    (tmp_path / ".tmp-step_00000004" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
