from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from modelfab.core.errors import DataError, NotFoundError
from modelfab.store.artifacts import ArtifactStore, sha256_bytes
from modelfab.store.datasets import ItemSpec, VersionSpec, version_hash


def _spec(**kw: object) -> VersionSpec:
    items = [ItemSpec("b.png", "h2"), ItemSpec("a.png", "h1")]
    base: dict[str, object] = {"items": items, "labels": {"a.png": {"label": "ok"}}, "splits": {"a.png": "train"}}
    base.update(kw)
    return VersionSpec(**base)  # type: ignore[arg-type]


def test_version_hash_ignores_order_and_message() -> None:
    a = _spec()
    b = _spec(items=list(reversed(a.items)), message="other message")
    assert version_hash(a) == version_hash(b)


@pytest.mark.parametrize(
    "change",
    [
        {"labels": {"a.png": {"label": "ng"}}},
        {"splits": {"a.png": "test"}},
        {"hidden": {"a.png": {"label": "ok"}}},
        {"items": [ItemSpec("b.png", "h2"), ItemSpec("a.png", "h1-changed")]},
        {"tasks": {"t": {"field": "label"}}},
    ],
)
def test_version_hash_changes_with_content(change: dict[str, object]) -> None:
    assert version_hash(_spec()) != version_hash(_spec(**change))


def test_artifact_roundtrip_and_layout(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    digest = store.put_bytes(b"hello")
    assert digest == sha256_bytes(b"hello")
    assert store.get_bytes(digest) == b"hello"
    assert store.local_path(digest) == tmp_path / "a" / "sha256" / digest[:2] / digest
    assert store.put_bytes(b"hello") == digest  # idempotent
    assert list(store.digests()) == [digest]
    leftovers = [p for p in (tmp_path / "a").rglob(".tmp-*")]
    assert leftovers == []


def test_artifact_corruption_detected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    digest = store.put_bytes(b"payload")
    path = store.local_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(DataError, match="corrupt"):
        store.get_bytes(digest)


def test_artifact_missing_and_bad_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    with pytest.raises(NotFoundError):
        store.get_bytes("0" * 64)
    with pytest.raises(DataError, match="not a sha256"):
        store.get_bytes("../../etc/passwd")


def test_safetensors_roundtrip_no_pickle(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    digest = store.put_tensors(tensors, {"arch": "tiny"})
    raw = store.get_bytes(digest)
    assert b"pickle" not in raw[:200] and raw[8:9] == b"{"  # safetensors: u64 header length + JSON
    back = store.get_tensors(digest)
    assert torch.equal(back["w"], tensors["w"]) and torch.equal(back["b"], tensors["b"])


def test_non_safetensors_rejected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    digest = store.put_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DataError, match="safetensors"):
        store.get_tensors(digest)


def test_fsspec_memory_backend() -> None:
    store = ArtifactStore("memory://modelfab-test")
    digest = store.put_json({"b": 1, "a": [1, 2]})
    assert store.get_json(digest) == {"a": [1, 2], "b": 1}
    assert store.exists(digest)
