"""MoE routing and load balancing (PANGU_TECHNIQUES §3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelfab.pretrain.config import MoEConfig
from modelfab.pretrain.moe import MoE, dropless_dispatch
from modelfab.pretrain.router import Router, ep_group_loss, imbalance_score, switch_loss

ALPHA = 1e-2


def test_switch_loss_uniform_is_alpha_and_collapse_is_alpha_n() -> None:
    n_tok, n_exp = 32, 8
    probs = torch.full((n_tok, n_exp), 1 / n_exp)
    counts = torch.full((n_exp,), n_tok / n_exp)
    assert float(switch_loss(probs, counts, ALPHA)) == pytest.approx(ALPHA)
    collapsed = torch.zeros(n_tok, n_exp)
    collapsed[:, 0] = 1
    counts = torch.zeros(n_exp)
    counts[0] = n_tok
    assert float(switch_loss(collapsed, counts, ALPHA)) == pytest.approx(ALPHA * n_exp)


def test_switch_loss_gradient_flows_through_p_only() -> None:
    torch.manual_seed(0)
    probs = torch.rand(16, 4).softmax(-1).requires_grad_()
    counts = torch.tensor([6.0, 4.0, 4.0, 2.0], requires_grad=True)
    switch_loss(probs, counts, ALPHA).backward()
    assert counts.grad is None
    f = torch.tensor([6.0, 4.0, 4.0, 2.0]) / 16
    assert probs.grad is not None
    torch.testing.assert_close(probs.grad, (ALPHA * 4 * f / 16).expand(16, 4))


def _microbatch_losses(probs: torch.Tensor, idx: torch.Tensor, n_exp: int, group: bool) -> torch.Tensor:
    """Loss of each of the M equal micro-batches (M, n, E) of one EP group, simulated without dist."""
    counts = torch.stack([torch.bincount(i.flatten(), minlength=n_exp).float() for i in idx])  # (M, E)
    total = counts.sum(0)
    return torch.stack([ep_group_loss(p, total if group else c, ALPHA) for p, c in zip(probs, counts, strict=True)])


def test_ep_group_loss_equals_micro_batch_loss_with_ep_size_one() -> None:
    torch.manual_seed(0)
    probs = torch.rand(20, 6).softmax(-1)
    counts = torch.bincount(probs.topk(2).indices.flatten(), minlength=6).float()
    assert torch.equal(ep_group_loss(probs, counts, ALPHA, group=None), switch_loss(probs, counts, ALPHA))


def test_ep_group_loss_invariant_to_token_permutation_within_group() -> None:
    torch.manual_seed(0)
    m, n, n_exp, k = 4, 24, 8, 2
    logits = torch.randn(m * n, n_exp) * 2
    probs = logits.softmax(-1)
    idx = probs.topk(k).indices
    perm = torch.randperm(m * n)
    before = _microbatch_losses(probs.view(m, n, n_exp), idx.view(m, n, k), n_exp, group=True)
    after = _microbatch_losses(probs[perm].view(m, n, n_exp), idx[perm].view(m, n, k), n_exp, group=True)
    torch.testing.assert_close(before.mean(), after.mean(), rtol=1e-6, atol=0)  # group loss unchanged
    assert (before - after).abs().max() > 1e-4  # each micro-batch's own loss changes
    # the plain micro-batch loss, by contrast, is not permutation-invariant as a group mean
    local_before = _microbatch_losses(probs.view(m, n, n_exp), idx.view(m, n, k), n_exp, group=False)
    local_after = _microbatch_losses(probs[perm].view(m, n, n_exp), idx[perm].view(m, n, k), n_exp, group=False)
    assert abs(float(local_before.mean() - local_after.mean())) > 1e-6


def _router(kind: str, **kw: int) -> Router:
    torch.manual_seed(0)
    return Router(16, MoEConfig(router=kind, **kw))  # type: ignore[arg-type]


def test_aux_free_gates_come_from_affinity_and_bias_never_changes_them() -> None:
    router = _router("aux_free", n_experts=8, top_k=2)
    x = torch.randn(40, 16)
    r0 = router(x)
    s = torch.sigmoid(router.proj(x).float())
    chosen = s.gather(-1, r0.indices)
    torch.testing.assert_close(r0.gates, chosen / chosen.sum(-1, keepdim=True))
    # a bias that changes the selection: gates are still normalised affinities of the chosen experts
    router.bias.copy_(torch.tensor([5.0, 5.0, 0, 0, 0, 0, 0, 0]))
    r1 = router(x)
    assert torch.all(r1.indices.sort(-1).values == torch.tensor([0, 1]))
    chosen = s.gather(-1, r1.indices)
    torch.testing.assert_close(r1.gates, chosen / chosen.sum(-1, keepdim=True))
    # a bias that keeps the selection (a constant shift): identical gates
    router.bias.fill_(0.7)
    r2 = router(x)
    assert torch.equal(r2.indices, r0.indices) and torch.equal(r2.gates, r0.gates)


def test_aux_free_bias_update_rule() -> None:
    router = _router("aux_free", n_experts=4, top_k=1)
    router.bias.zero_()
    router.update_bias(torch.tensor([10.0, 2.0, 4.0, 4.0]))  # mean 5
    torch.testing.assert_close(router.bias, torch.tensor([-1e-3, 1e-3, 1e-3, 1e-3]))
    router.update_bias(torch.tensor([3.0, 3.0, 3.0, 3.0]))
    torch.testing.assert_close(router.bias, torch.tensor([-1e-3, 1e-3, 1e-3, 1e-3]))
    # counts accumulate during training forwards and reset after the update
    router.train()
    router(torch.randn(10, 16))
    assert float(router.load.sum()) == 10
    router.update_bias()
    assert float(router.load.sum()) == 0


def test_moge_one_per_group_raw_softmax_gates_and_zero_imbalance() -> None:
    router = _router("moge", n_experts=64, top_k=8, n_groups=8)
    for seed in range(50):
        torch.manual_seed(seed)
        r = router(torch.randn(16, 16) * 3)
        groups = r.indices // 8  # (16, 8)
        assert torch.equal(groups.sort(-1).values, torch.arange(8).expand(16, 8))
        torch.testing.assert_close(r.gates, r.probs.gather(-1, r.indices))  # raw S, not renormalised
        assert float(r.gates.detach().sum(-1).max()) < 1.0
        assert imbalance_score(r.indices, 64, 8) == 0.0


def test_plain_top_k_is_almost_always_imbalanced() -> None:
    g = torch.Generator().manual_seed(0)
    trials, positive = 200, 0
    for _ in range(trials):
        probs = torch.randn(16, 64, generator=g).softmax(-1)
        positive += imbalance_score(probs.topk(8).indices, 64, 8) > 0
    assert positive / trials >= 0.99


def _dense_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, combined with the router's gates (no dispatch at all)."""
    flat = x.reshape(-1, x.shape[-1])
    r = moe.router(flat)
    all_out = torch.stack([e(flat) for e in moe.experts], dim=1)  # (N, E, C)
    picked = all_out.gather(1, r.indices[..., None].expand(-1, -1, flat.shape[-1]))  # (N, K, C)
    out = (picked * r.gates[..., None]).sum(1)
    if moe.shared is not None:
        out = out + moe.shared(flat)
    return out.view_as(x)


@pytest.mark.parametrize("router", ["topk", "aux_free", "moge"])
def test_dropless_dispatch_matches_dense_reference(router: str) -> None:
    torch.manual_seed(0)
    groups = 2 if router == "moge" else 1
    moe = MoE(16, MoEConfig(n_experts=6, top_k=2, n_groups=groups, router=router, expert_hidden=24))  # type: ignore[arg-type]
    moe.eval()
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(moe(x), _dense_reference(moe, x), rtol=1e-5, atol=1e-6)
    assert float(moe.counts.sum()) == 3 * 7 * 2


def test_dropless_under_collapse_every_token_reaches_its_expert() -> None:
    torch.manual_seed(0)
    moe = MoE(16, MoEConfig(n_experts=4, top_k=1, n_shared=0, expert_hidden=8))
    with torch.no_grad():
        moe.router.proj.weight.zero_()
        moe.router.proj.weight[0].fill_(10.0)  # every token's logit favours expert 0
    x = torch.rand(2, 50, 16) + 0.1  # positive inputs -> expert 0 wins everywhere
    out = moe(x)
    assert moe.counts.tolist() == [100.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(out, _dense_reference(moe, x))
    # no token is dropped: every output row is non-zero
    assert bool((out.abs().sum(-1) > 0).all())


def test_dispatch_gradients_reach_every_expert_even_unused() -> None:
    torch.manual_seed(0)
    experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    x = torch.randn(5, 4)
    idx = torch.zeros(5, 1, dtype=torch.long)
    out = dropless_dispatch(x, idx, torch.ones(5, 1), experts)
    out.sum().backward()
    assert experts[0].weight.grad is not None and experts[0].weight.grad.abs().sum() > 0
    assert experts[2].weight.grad is not None and experts[2].weight.grad.abs().sum() == 0


def test_moe_layer_records_aux_loss_counts_and_stats() -> None:
    torch.manual_seed(0)
    for balance, positive in [("switch", True), ("ep_group", True), ("none", False)]:
        moe = MoE(16, MoEConfig(n_experts=4, top_k=2, balance=balance, stat_devices=2))  # type: ignore[arg-type]
        moe(torch.randn(2, 8, 16))
        assert (float(moe.aux_loss.detach()) > 0) == positive
        assert 0.0 <= moe.imbalance() <= 2.0
