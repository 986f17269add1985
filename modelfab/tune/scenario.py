"""A scenario model: a backbone (possibly adapted) plus a task head, as one plain ``nn.Module``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from modelfab.core.errors import ConfigError
from modelfab.tune.prior import AnomalyPrior
from modelfab.zoo.base import Backbone


class ScenarioNet(nn.Module):
    """``forward(batch) -> (N, C) logits`` where ``batch`` is the backbone's preprocessed input.

    With an anomaly ``prior`` (image-defect), one backbone pass feeds both the head (pooled embedding)
    and the prior (patch maps), and the logits are the fused ones.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, prior: AnomalyPrior | None = None) -> None:
        super().__init__()
        self.encoder = backbone.module
        self.head = head
        self.prior = prior
        self._embed = backbone.embed  # bound to the same module object as ``encoder``
        self._features = getattr(backbone, "features", None)
        if prior is not None and self._features is None:
            raise ConfigError(f"prior: {backbone.name} has no feature maps for an anomaly prior")

    def forward(self, batch: Any) -> Tensor:
        if self.prior is None:
            return self.head(self._embed(batch))
        assert self._features is not None
        feats = self._features(batch, [*self.prior.layers, "pooled"])
        return self.prior(self.head(feats["pooled"]), feats)
