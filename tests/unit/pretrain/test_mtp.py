"""Multi-Token Prediction properties (PANGU_TECHNIQUES §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.model import Transformer


def _model(depth: int, lam: float = 0.3) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, mtp_depth=depth, mtp_lambda=lam))


def test_embedding_and_head_are_shared_not_copied() -> None:
    model = _model(2)
    assert model.mtp is not None
    mtp_params = {id(p) for p in model.mtp.parameters()}
    assert id(model.tok_emb.weight) not in mtp_params and id(model.lm_head.weight) not in mtp_params
    base = _model(0)
    assert model.num_params() == base.num_params() + sum(p.numel() for p in model.mtp.parameters())
    # the MTP loss alone trains the very same embedding and head tensors
    idx = torch.randint(0, 64, (2, 10))
    out = model(idx, idx.roll(-1, 1))
    assert out.mtp is not None
    out.mtp.backward()
    assert model.tok_emb.weight.grad is not None and model.tok_emb.weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_mtp_prediction_is_causal() -> None:
    model = _model(2).eval()
    idx = torch.randint(0, 64, (1, 12))
    ref = model(idx, idx).mtp_logits
    for k, logits in enumerate(ref, start=1):
        i = 4
        changed = idx.clone()
        changed[0, i + k + 1 :] = (changed[0, i + k + 1 :] + 7) % 64  # tokens after i+k
        new = model(changed, changed).mtp_logits[k - 1]
        torch.testing.assert_close(new[0, : i + 1], logits[0, : i + 1])
        changed[0, i + k] = (changed[0, i + k] + 3) % 64  # token i+k itself is an input at i
        new = model(changed, changed).mtp_logits[k - 1]
        assert not torch.allclose(new[0, i], logits[0, i])


def test_removing_mtp_leaves_main_logits_unchanged() -> None:
    with_mtp = _model(1).eval()
    without = _model(0).eval()
    state = {k: v for k, v in with_mtp.state_dict().items() if not k.startswith("mtp.")}
    without.load_state_dict(state, strict=True)
    idx = torch.randint(0, 64, (2, 10))
    a, b = with_mtp(idx, idx), without(idx, idx)
    assert torch.equal(a.logits, b.logits)
    assert a.ce is not None and b.ce is not None and torch.equal(a.ce, b.ce)


def test_mtp_loss_is_lambda_times_mean_ce() -> None:
    model = _model(3, lam=0.25).eval()
    idx = torch.randint(0, 64, (2, 10))
    targets = torch.randint(0, 64, (2, 10))
    out = model(idx, targets)
    ces = [F.cross_entropy(lg.flatten(0, 1), targets[:, k:].flatten()) for k, lg in enumerate(out.mtp_logits, start=1)]
    assert [lg.shape[1] for lg in out.mtp_logits] == [9, 8, 7]
    assert out.mtp is not None and out.ce is not None and out.loss is not None
    torch.testing.assert_close(out.mtp, 0.25 * torch.stack(ces).mean())
    torch.testing.assert_close(out.loss, out.ce + out.mtp)
