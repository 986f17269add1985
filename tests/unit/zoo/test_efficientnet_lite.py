"""Our plain-Conv2d EfficientNet-Lite equals the package model (same weights, same outputs)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from modelfab.zoo.vision.efficientnet_lite import EfficientNetLite, block_specs, same_pad, stage_ends
from modelfab.zoo.vision.lite_backbone import EfficientNetLiteBackbone, EfficientNetLiteConfig
from modelfab.zoo.vision.lite_weights import packaged_pth, rename_package_keys

efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")


def lite(variant: str = "lite0", **kw: object) -> EfficientNetLiteBackbone:
    return EfficientNetLiteBackbone(f"efficientnet-{variant}", variant, EfficientNetLiteConfig(**kw))  # type: ignore[arg-type]


def package_model(variant: str, image_size: int | None = None) -> Any:
    overrides = {"image_size": image_size} if image_size else {}
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        model = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
            f"efficientnet-{variant}", weights_path=str(packaged_pth(variant)), **overrides
        )
    return model.eval()


@pytest.mark.parametrize(("variant", "size", "params"), [("lite0", 224, 4_652_008), ("lite2", 260, 6_092_072)])
def test_outputs_equal_package_model_at_native_resolution(variant: str, size: int, params: int) -> None:
    torch.manual_seed(0)
    ours = lite(variant)
    ref = package_model(variant)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(ours.net(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.net.forward_features(x), ref.extract_features(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in ours.net.parameters()) == params
    # LoRA-ready: every conv is a plain nn.Conv2d
    convs = [m for m in ours.net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)


def test_dynamic_same_padding_matches_package_at_odd_resolution() -> None:
    ours = lite().net
    ref = package_model("lite0", image_size=97)
    x = torch.randn(1, 3, 97, 97)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_intermediate_blocks_match_package() -> None:
    bb = lite(image_size=96)
    ref = package_model("lite0", image_size=96)
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        feats = bb.features(x, names=["block4", "block10", "block14"])
        h = ref._swish(ref._bn0(ref._conv_stem(x)))
        for i, block in enumerate(ref._blocks[:15]):
            h = block(h)
            if f"block{i}" in feats:
                torch.testing.assert_close(feats[f"block{i}"], h, rtol=1e-5, atol=1e-5)
    assert feats["block4"].shape == (1, 40, 12, 12)  # stride 8
    assert feats["block10"].shape == (1, 112, 6, 6)  # stride 16
    assert feats["block14"].shape == (1, 192, 3, 3)  # stride 32


def test_feature_taps_and_strides() -> None:
    bb = lite(pretrained=False)
    assert stage_ends("lite0") == [0, 2, 4, 7, 10, 14, 15]
    assert stage_ends("lite2") == [0, 3, 6, 10, 14, 19, 20]
    assert len(block_specs("lite2")) == 21
    assert bb.tap_for_stride(8) == "block4" and bb.tap_for_stride(16) == "block10"
    assert bb.tap_for_stride(32) == "block15"
    assert bb.feature_info["block14"] == {"channels": 192, "stride": 32}


def test_same_pad_is_tf_same() -> None:
    assert same_pad((224, 224), 3, 2) == [0, 1, 0, 1]
    assert same_pad((225, 225), 3, 2) == [1, 1, 1, 1]
    assert same_pad((224, 224), 5, 2) == [1, 2, 1, 2]


def test_rename_rejects_unknown_keys() -> None:
    from modelfab.core.errors import DataError

    with pytest.raises(DataError, match="unexpected parameter"):
        rename_package_keys({"_blocks.0._se_reduce.weight": torch.zeros(1)})


def test_preprocess_grayscale_is_repeated_and_normalised() -> None:
    bb = lite(image_size=32, pretrained=False)
    gray = np.full((40, 30), 255, dtype=np.uint8)
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    batch = bb.preprocess([gray, rgb])
    assert batch.shape == (2, 3, 32, 32)
    torch.testing.assert_close(batch[0], torch.full((3, 32, 32), (1 - 0.498) / 0.502))
    torch.testing.assert_close(batch[1], torch.full((3, 32, 32), -0.498 / 0.502))


def test_drop_path_only_in_training() -> None:
    net = EfficientNetLite("lite0", drop_path_rate=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(net.forward_features(x), net.forward_features(x))
