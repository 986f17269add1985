"""The L0 decoder-only transformer (a plain nn.Module: no training loop, no store)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from modelfab.pretrain.attention import KVCache
from modelfab.pretrain.block import Block
from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.init import init_weights
from modelfab.pretrain.moe import MoE
from modelfab.pretrain.mtp import MTP
from modelfab.pretrain.norm import RMSNorm


def _block(m: nn.Module) -> Block:
    if not isinstance(m, Block):
        raise TypeError(f"expected a Block, got {type(m).__name__}")
    return m


@dataclass
class LMOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # ce + aux + mtp
    ce: torch.Tensor | None = None  # main-head cross-entropy
    aux: torch.Tensor | None = None  # sum of the MoE balancing losses
    mtp: torch.Tensor | None = None  # lambda/D sum_k CE_k
    mtp_logits: list[torch.Tensor] = field(default_factory=list)


class Transformer(nn.Module):
    """Embedding -> L blocks -> final RMSNorm -> untied head (+ optional MTP modules)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(
            Block(cfg, i, use_moe=cfg.ffn == "moe" and i >= cfg.moe_first_dense) for i in range(cfg.n_layers)
        )
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.mtp = MTP(cfg) if cfg.mtp_depth else None
        init_weights(self, cfg.init, cfg.d_model, cfg.n_layers)

    def moe_layers(self) -> Iterator[MoE]:
        return (m for m in self.modules() if isinstance(m, MoE))

    def trunk(self, idx: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Last hidden state before the final norm: (B, T, C)."""
        x = self.tok_emb(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x, start_pos, cache)
        return x

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        start_pos: int = 0,
        cache: KVCache | None = None,
    ) -> LMOutput:
        """idx (B, T) token ids; targets (B, T) next tokens (-1 = ignore)."""
        h = self.trunk(idx, start_pos, cache)
        logits = self.lm_head(self.norm_f(h))  # (B, T, V)
        if targets is None:
            return LMOutput(logits)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        aux_terms = [m.aux_loss for m in self.moe_layers()]
        aux = torch.stack(aux_terms).sum() if aux_terms else ce.new_zeros(())
        loss = ce + aux
        mtp_loss, mtp_logits = None, []
        if self.mtp is not None:
            mtp_logits = self.mtp(h, idx, self.tok_emb, self.lm_head)
            mtp_loss = self.mtp.loss(mtp_logits, targets)
            loss = loss + mtp_loss
        return LMOutput(logits, loss, ce, aux, mtp_loss, mtp_logits)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation of idx (B, T); returns (B, T + new)."""
        cache = KVCache() if use_cache else None
        out, step_in, pos = idx, idx, 0
        for _ in range(max_new_tokens):
            if cache is None:
                logits = self(out).logits[:, -1]
            else:
                logits = self(step_in, start_pos=pos, cache=cache).logits[:, -1]
                pos += step_in.shape[1]
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = (logits.float() / temperature).softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            out, step_in = torch.cat((out, nxt), dim=1), nxt
        return out

    def kv_cache_bytes_per_token(self, bytes_per_elem: int = 2) -> int:
        """Cache bytes per token over all layers (MHA: 2 H Dh per layer; MLA: d_c + d_h^R)."""
        return bytes_per_elem * sum(_block(b).attn.cache_elems_per_token() for b in self.blocks)

    def num_params(self, active: bool = False) -> int:
        """Parameter count; with active=True only top_k of the routed experts count, MTP excluded."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        if self.mtp is not None:
            total -= sum(p.numel() for p in self.mtp.parameters())
        for m in self.moe_layers():
            per_expert = sum(p.numel() for p in m.experts[0].parameters())
            total -= per_expert * (m.cfg.n_experts - m.cfg.top_k)
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x active matmul params + causal attention (6 L T H Dh)."""
        cfg = self.cfg
        n = self.num_params(active=True) - self.tok_emb.weight.numel()
        return 6.0 * n + 6.0 * cfg.n_layers * seq_len * cfg.n_heads * cfg.dim_head
