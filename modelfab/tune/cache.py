"""Feature cache: frozen-backbone embeddings computed once per (backbone, preprocessing), per item.

Entries are keyed by the item's content hash, so every dataset version (relabels, new splits,
few-shot draws) reuses what earlier runs computed. Each computation appends one safetensors
shard (written to a temporary name, then renamed); a killed run loses only its unfinished shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from modelfab.core.devices import placed, to_device
from modelfab.core.progress import track
from modelfab.zoo.base import Backbone, evaluating


def cache_key(weights_digest: str, backbone: Backbone, extra: dict[str, Any] | None = None) -> str:
    """Key of a frozen backbone's embeddings: weights + builder + input spec (+ anything else)."""
    payload = json.dumps(
        {"weights": weights_digest, "builder": backbone.name, "input": backbone.input_spec.to_dict(), **(extra or {})},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class FeatureCache:
    """Embeddings of one frozen backbone under ``root/<key>/``."""

    def __init__(self, root: Path, key: str) -> None:
        self.dir = root / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, Tensor] | None = None

    def _load(self) -> dict[str, Tensor]:
        if self._rows is None:
            rows: dict[str, Tensor] = {}
            for shard in sorted(self.dir.glob("shard-*.safetensors")):
                try:
                    data = load_file(str(shard))
                    hashes = json.loads(shard.with_suffix(".json").read_text())
                except (OSError, SafetensorError, json.JSONDecodeError):
                    continue  # an unreadable shard is recomputed, never trusted
                emb = data["embeddings"]
                if len(hashes) == emb.shape[0]:
                    rows.update(zip(hashes, emb, strict=True))
            self._rows = rows
        return self._rows

    def _save_shard(self, hashes: list[str], emb: Tensor) -> None:
        name = hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:16]
        target = self.dir / f"shard-{name}.safetensors"
        for path, write in (
            (target.with_suffix(".json"), lambda p: Path(p).write_text(json.dumps(hashes))),
            (target, lambda p: save_file({"embeddings": emb.contiguous()}, p)),
        ):
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)

    def embeddings(
        self,
        backbone: Backbone,
        hashes: Sequence[str],
        load: Callable[[list[int]], list[Any]],
        *,
        batch_size: int = 32,
        description: str = "embedding",
        device: torch.device | None = None,
    ) -> Tensor:
        """(N, D) embeddings of the items ``hashes``; ``load(indices)`` gives raw inputs of the missing ones.

        ``device``: where the missing ones are computed (the backbone goes back afterwards); the cache
        holds float32 CPU tensors whatever computed them.
        """
        rows = self._load()
        missing = sorted({i for i, h in enumerate(hashes) if h not in rows}, key=lambda i: hashes[i])
        missing_unique: list[int] = []
        seen: set[str] = set()
        for i in missing:
            if hashes[i] not in seen:
                seen.add(hashes[i])
                missing_unique.append(i)
        if missing_unique:
            computed: list[Tensor] = []
            starts = range(0, len(missing_unique), batch_size)
            where = device or torch.device("cpu")
            with placed(backbone.module, where), evaluating(backbone.module):
                for start in track(starts, len(starts), description):
                    idx = missing_unique[start : start + batch_size]
                    batch = to_device(backbone.preprocess(load(idx)), where)
                    computed.append(backbone.embed(batch).float().cpu())  # (n, D)
            emb = torch.cat(computed)
            new_hashes = [hashes[i] for i in missing_unique]
            self._save_shard(new_hashes, emb)
            rows.update(zip(new_hashes, emb, strict=True))
        return torch.stack([rows[h] for h in hashes])
