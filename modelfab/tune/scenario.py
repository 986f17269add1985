"""A scenario model: a backbone (possibly adapted) plus a task head, as one plain ``nn.Module``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from modelfab.zoo.base import Backbone


class ScenarioNet(nn.Module):
    """``forward(batch) -> (N, C) logits`` where ``batch`` is the backbone's preprocessed input."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.encoder = backbone.module
        self.head = head
        self._embed = backbone.embed  # bound to the same module object as ``encoder``

    def forward(self, batch: Any) -> Tensor:
        return self.head(self._embed(batch))
