"""Weight initialisation schemes.

- ``default``: every weight (embedding included) ~ N(0, 0.02).
- ``small`` (Nguyen & Salazar): every weight ~ N(0, sqrt(2 / (5 d))).
- ``tiny`` (TinyInit, Pangu Ultra §2): every non-embedding weight ~ N(0, sqrt(1 / (2 d L))),
  the embedding ~ N(0, 0.5).  The report implies *all* non-embedding weights (attention, FFN,
  experts, router, MTP projections and the untied output head); that is the assumption here.

RMSNorm gains are not touched: they keep the values their norm scheme gives them (1, or the DSSN
gains).
"""

from __future__ import annotations

import math

from torch import nn

from modelfab.pretrain.config import InitKind


def tiny_init_std(d_model: int, n_layers: int) -> float:
    """TinyInit std ``sqrt(1 / (2 d L))``; d = 12288, L = 94 gives 6.579e-4."""
    return math.sqrt(1.0 / (2 * d_model * n_layers))


def small_init_std(d_model: int) -> float:
    """Small-init std ``sqrt(2 / (5 d))``."""
    return math.sqrt(2.0 / (5 * d_model))


def init_stds(kind: InitKind, d_model: int, n_layers: int) -> tuple[float, float]:
    """(std of non-embedding weights, std of the embedding) for a scheme."""
    if kind == "default":
        return 0.02, 0.02
    if kind == "small":
        s = small_init_std(d_model)
        return s, s
    if kind == "tiny":
        return tiny_init_std(d_model, n_layers), 0.5
    raise ValueError(f"init: unknown scheme {kind!r}")


def init_weights(model: nn.Module, kind: InitKind, d_model: int, n_layers: int) -> None:
    """Initialise every nn.Linear and nn.Embedding of ``model`` in place."""
    std, emb_std = init_stds(kind, d_model, n_layers)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, emb_std)
