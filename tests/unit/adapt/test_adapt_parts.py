"""Unit tests of the adaptation parts: augmentations, losses, LoRA merge, checkpoints, schedule, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn

from modelfab.adapt.augment import AugmentConfig, gaussian_blur, make_view, random_resized_crop
from modelfab.adapt.checkpoint import latest_checkpoint, load_optimizer, optimizer_tensors, save_checkpoint
from modelfab.adapt.config import AdaptConfig
from modelfab.adapt.evaluate import Split, fewshot_probe, knn_anomaly_auroc, mean_ci, probe_auroc
from modelfab.adapt.lora import LoRAConv1x1, add_lora, merge_lora
from modelfab.adapt.losses import byol_loss, nt_xent
from modelfab.adapt.runner import lr_at
from modelfab.core.errors import ConfigError, DataError


def test_views_are_reproducible_bounded_and_different() -> None:
    x = torch.rand(4, 3, 40, 40)
    cfg = AugmentConfig()
    a = make_view(x, 32, torch.Generator().manual_seed(1), cfg)
    b = make_view(x, 32, torch.Generator().manual_seed(1), cfg)
    c = make_view(x, 32, torch.Generator().manual_seed(2), cfg)
    assert a.shape == (4, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_full_crop_is_identity_and_blur_keeps_constants() -> None:
    x = torch.rand(2, 1, 16, 16)
    same = random_resized_crop(x, 16, torch.Generator().manual_seed(0), (1.0, 1.0), (1.0, 1.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flat = torch.full((3, 3, 12, 12), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, torch.Generator().manual_seed(0), p=1.0), flat)


def test_nt_xent_prefers_matching_views() -> None:
    z = torch.randn(8, 16)
    aligned = nt_xent(z, z + 0.01 * torch.randn(8, 16), 0.2)
    shuffled = nt_xent(z, z[torch.roll(torch.arange(8), 1)], 0.2)
    assert aligned < shuffled
    assert byol_loss(z, z).abs() < 1e-5 and byol_loss(z, -z) == pytest.approx(4.0)


def test_lora_starts_at_base_and_merges_exactly() -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    x = torch.randn(2, 4, 5, 5)
    before = net(x)
    assert add_lora(net, rank=2) == 1
    assert isinstance(net[0], LoRAConv1x1)
    torch.testing.assert_close(net(x), before)  # B is zero-initialised
    with torch.no_grad():
        net[0].lora_b.normal_()
    adapted = net(x)
    assert not torch.allclose(adapted, before)
    assert merge_lora(net) == 1 and type(net[0]) is nn.Conv2d
    torch.testing.assert_close(net(x), adapted, atol=1e-5, rtol=1e-5)


def test_checkpoint_roundtrip_and_corruption(tmp_path: Path) -> None:
    p = nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    tensors, meta = optimizer_tensors(opt)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"model.w": p.detach() * step, **tensors}, {"optimizer": meta, "x": step})
    assert sorted(q.name for q in tmp_path.glob("ckpt-*.json")) == ["ckpt-000004.json", "ckpt-000006.json"]
    ck = latest_checkpoint(tmp_path)
    assert ck is not None and ck.step == 6 and ck.meta["x"] == 6
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(3))], lr=0.1)
    load_optimizer(opt2, ck.tensors, ck.meta)
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    (tmp_path / "ckpt-000006.safetensors").write_bytes(b"x")
    warnings: list[str] = []
    ck = latest_checkpoint(tmp_path, warn=warnings.append)
    assert ck is not None and ck.step == 4 and "corrupt" in warnings[0]
    (tmp_path / "ckpt-000004.json").write_text(json.dumps({"weights": "nope"}))
    with pytest.raises(DataError, match="no usable checkpoint"):
        latest_checkpoint(tmp_path)


def test_schedule_and_config_validation() -> None:
    cfg = AdaptConfig(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) < 0.1
    bad: dict[str, Any]
    for bad in ({"steps": 0}, {"batch_size": 2}, {"cache_views": 1}, {"objective": "mae"}, {"resolution": 8}):
        with pytest.raises(ConfigError):
            AdaptConfig(**bad)
    assert AdaptConfig(steps=5).fingerprint() == AdaptConfig(steps=9, time_budget_s=3).fingerprint()


def test_probe_and_knn_metrics_on_separable_data() -> None:
    rng = np.random.default_rng(0)

    def make(n: int) -> Split:
        y = (np.arange(n) % 3 == 0).astype(int)
        centre = np.where(y[:, None] == 1, np.eye(8)[1] * 3, np.eye(8)[0] * 3)  # separate directions
        x = centre + rng.normal(scale=0.7, size=(n, 8))
        return Split(x, y)

    train, val, test = make(120), make(60), make(60)
    assert probe_auroc(train, val, test)["test_auroc"] > 0.95
    few = fewshot_probe(train, val, test, shots=5, seeds=[0, 1, 2])
    test_ci = cast(dict[str, float], few["test"])
    assert test_ci["mean"] > 0.9 and len(cast(list[float], few["per_seed"])) == 3
    assert knn_anomaly_auroc(train, val, test)["test_auroc"] > 0.9
    noise = Split(rng.normal(size=(60, 8)), test.y)
    assert probe_auroc(train, val, noise)["test_auroc"] < 0.75
    ci = mean_ci([0.5, 0.6, 0.7])
    assert ci["mean"] == pytest.approx(0.6) and ci["ci95"] == pytest.approx(4.303 * 0.1 / 3**0.5)
