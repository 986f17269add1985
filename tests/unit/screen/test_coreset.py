"""Greedy coreset coverage and the memory bound of the patch bank, on generated features only."""

from __future__ import annotations

import math

import pytest
import torch

from modelfab.core.errors import DataError
from modelfab.screen.coreset import BYTES_PER_VALUE, PatchBank, covering_radius, greedy_coreset
from modelfab.screen.knn_memory import KnnMemoryConfig, KnnMemoryScorer


def clusters(n_clusters: int, per: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=gen) * 10
    sizes = [per * (10 if i == 0 else 1) for i in range(n_clusters)]  # one dominant cluster
    return torch.cat([c + 0.1 * torch.randn(s, dim, generator=gen) for c, s in zip(centres, sizes, strict=True)])


def test_greedy_covers_every_cluster_where_random_misses() -> None:
    x = clusters(12, 20, 16)
    idx = greedy_coreset(x, 12, seed=0)
    assert len(set(idx.tolist())) == 12
    greedy_r = covering_radius(x, x[idx])
    rand = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:12]]
    assert greedy_r < 1.0 < covering_radius(x, rand)  # greedy: one centre per cluster, radius = noise
    assert torch.equal(idx, greedy_coreset(x, 12, seed=0))  # seeded, deterministic
    assert len(greedy_coreset(x, 10_000)) == len(x)


def test_bank_never_exceeds_the_budget() -> None:
    """10k generated 'images' of 2x2 patches, 16 dims, through a 64 KB bank: bank and peak stay within
    (the bank is re-reduced several times on the way)."""
    dim, budget = 16, 2**16
    bank = PatchBank(dim, budget, ratio=0.1, chunk=4096, patches_per_image=4, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # 20 batches x 500 images x 4 patches
        bank.add(torch.randn(2000, dim, generator=gen))
    out = bank.finish()
    assert bank.seen == 40_000
    assert out.numel() * BYTES_PER_VALUE <= budget
    assert bank.peak_bytes <= budget
    assert len(out) >= 0.4 * bank.capacity  # the budget is used, not wasted


def test_default_budget_holds_100k_images_in_1gb() -> None:
    """The default bound: whatever the image count, bank + pending chunk <= max_memory_mb <= 1 GB.
    For Lite0 block4 + block10 at 300 px (38 x 38 patches, 152 dims) 100k images are 144M patches;
    the default bank holds the 1% coreset of ~1.7M of them in 1 GB."""
    cfg = KnnMemoryConfig()
    assert cfg.max_memory_mb * 2**20 <= 2**30
    rows = int(cfg.max_memory_mb * 2**20) // (BYTES_PER_VALUE * 152)
    bank = PatchBank(152, int(cfg.max_memory_mb * 2**20), cfg.coreset_ratio, cfg.chunk, 38 * 38, 0)
    assert (bank.capacity + bank.chunk) * 152 * BYTES_PER_VALUE <= 2**30
    assert bank.capacity + bank.chunk == rows
    assert math.ceil(100_000 * 38 * 38 * cfg.coreset_ratio) <= 1.1 * bank.capacity


def test_scorer_fit_streams_within_budget_and_reports_it() -> None:
    cfg = KnnMemoryConfig(max_memory_mb=0.05, coreset_ratio=0.2, chunk=256)
    scorer = KnnMemoryScorer(cfg)
    gen = torch.Generator().manual_seed(1)
    scorer.fit(torch.randn(8, 16, 6, 6, generator=gen) for _ in range(20))  # 160 images x 36 patches
    meta = scorer.meta()
    assert meta["images"] == 160 and meta["patches_seen"] == 160 * 36
    assert meta["bank_bytes"] <= 0.05 * 2**20 and meta["peak_bytes"] <= 0.05 * 2**20
    out = scorer.score(torch.randn(3, 16, 6, 6, generator=gen))
    assert out.scores.shape == (3,) and out.maps is not None and out.maps.shape == (3, 6, 6)


def test_budget_too_small_is_refused() -> None:
    with pytest.raises(DataError, match=r"max_memory_mb.*use at least"):
        PatchBank(152, 100_000, 0.01, 4096, 38 * 38, 0)
    scorer = KnnMemoryScorer(KnnMemoryConfig(max_memory_mb=0.01))
    with pytest.raises(DataError, match="less than one image"):
        scorer.fit([torch.randn(2, 64, 16, 16)])
