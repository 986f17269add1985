"""The local-path loader (HF folders and safetensors checkpoints) and bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.store.artifacts import ArtifactStore
from modelfab.zoo import build_backbone, embed_items, load_backbone, save_backbone
from modelfab.zoo.testing import write_tiny_hf_model
from modelfab.zoo.vision.lite_backbone import EfficientNetLiteBackbone, EfficientNetLiteConfig


def test_local_encoder_folder_embeds(tmp_path: Path) -> None:
    folder = write_tiny_hf_model(tmp_path / "bert", "text")
    bb = build_backbone("local", path=str(folder))
    assert bb.input_spec.modality == "text" and bb.embed_dim == 16
    emb = embed_items(bb, ["the panel is good", "a crack"])
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_local_causal_lm_folder_roundtrip(tmp_path: Path) -> None:
    folder = write_tiny_hf_model(tmp_path / "llama", "lm")
    bb = build_backbone("local", path=str(folder))
    assert bb.input_spec.modality == "lm" and bb.config["kind"] == "lm"
    store = ArtifactStore(tmp_path / "a")
    saved = save_backbone(bb, store)
    assert saved.card_data["extra"]["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded = load_backbone(store, saved.weights, saved.card)
    texts = ["the cell is broken", "ok"]
    torch.testing.assert_close(embed_items(loaded, texts), embed_items(bb, texts))
    feats = bb.features(bb.preprocess(texts))
    assert feats["logits"].shape[:2] == feats["tokens"].shape[:2]


def test_local_safetensors_checkpoint_with_builder_metadata(tmp_path: Path) -> None:
    src = EfficientNetLiteBackbone("efficientnet-lite0", "lite0", EfficientNetLiteConfig(image_size=64))
    with torch.no_grad():  # make the weights differ from the packaged ones
        src.net.head.bn.bias.add_(0.5)
    ckpt = tmp_path / "lite0-tuned.safetensors"
    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()}, str(ckpt),
              metadata={"builder": "efficientnet-lite0"})
    (tmp_path / "lite0-tuned.safetensors.json").write_text(json.dumps({"config": {"image_size": 64}}))
    loaded = build_backbone("local", path=str(ckpt))
    assert loaded.name == "efficientnet-lite0" and loaded.input_spec.image_size == 64
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.embed(x), src.embed(x))


def test_local_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        build_backbone("local", path=str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"config\.json"):
        build_backbone("local", path=str(tmp_path))
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(DataError, match="cannot tell its architecture"):
        build_backbone("local", path=str(bare))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="not a readable safetensors"):
        build_backbone("local", path=str(junk))
    with pytest.raises(ConfigError, match="path"):
        build_backbone("local")


def test_unknown_builder_and_config_field() -> None:
    with pytest.raises(NotFoundError, match="efficientnet-lite0"):
        build_backbone("resnet-9000")
    with pytest.raises(ConfigError, match="unknown config field"):
        build_backbone("efficientnet-lite0", colour=True)
    with pytest.raises(ConfigError, match="image_size"):
        build_backbone("efficientnet-lite0", image_size=4)


def test_corrupt_stored_weights_are_reported(tmp_path: Path) -> None:
    bb = build_backbone("efficientnet-lite0", image_size=64, pretrained=False)
    store = ArtifactStore(tmp_path / "a")
    saved = save_backbone(bb, store)
    wrong = store.put_tensors({"stem.conv.weight": torch.zeros(1)})
    with pytest.raises(DataError, match="do not fit"):
        load_backbone(store, wrong, saved.card)


def test_weights_digest_is_stable_across_processes(tmp_path: Path) -> None:
    """Content addressing needs byte-identical safetensors in every process (no random header order)."""
    import subprocess
    import sys

    code = ("from modelfab.zoo import build_backbone; from modelfab.zoo.registry import _weights_digest; "
            "print(_weights_digest(build_backbone('efficientnet-lite0', image_size=32)))")
    env = {**__import__("os").environ, "MODELFAB_HOME": str(tmp_path)}
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              check=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1 and len(digests.pop()) == 64
