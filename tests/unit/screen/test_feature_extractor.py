"""FeatureExtractor runs the backbone in eval mode and hands it back in the mode the caller left it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelfab.screen.base import FeatureConfig
from modelfab.screen.features import FeatureExtractor
from modelfab.zoo import build_backbone


@pytest.mark.parametrize("kind", ["patch", "embedding"])
def test_eval_for_the_call_and_the_callers_mode_after(kind: str) -> None:
    bb = build_backbone("efficientnet-lite0", image_size=64)
    extractor = FeatureExtractor(bb, FeatureConfig(layers=["block4", "block10"], image_size=64), kind)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(3)]
    bb.module.eval()
    in_eval = extractor(images)
    assert not bb.module.training
    bb.module.train()
    in_train = extractor(images)
    assert bb.module.training  # was left in eval mode before
    torch.testing.assert_close(in_train, in_eval, rtol=0, atol=0)  # BatchNorm ran on its running statistics
