"""Content-addressed artifact store (sha256) behind an fsspec URL.

Layout: ``<root>/sha256/<first two hex>/<digest>``.  Every write goes to a temporary name in the
same directory and is renamed into place, so a killed writer never leaves a half-written artifact
under a digest.  Model weights are stored only as safetensors plus a JSON card (no pickles).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec

from modelfab.core.errors import DataError, NotFoundError

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a local file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DataError(f"not a sha256 digest: {digest!r}")
    return digest


class ArtifactStore:
    """Immutable blobs addressed by their sha256, on any fsspec filesystem (``file://``, ``s3://``)."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.fs.makedirs(self.root, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------------
    def _key(self, digest: str) -> str:
        digest = _check_digest(digest)
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    def local_path(self, digest: str) -> Path:
        """Local filesystem path of an artifact (only for ``file://`` stores)."""
        if not self.is_local:
            raise DataError(f"artifact store {self.url} is not local; use open()")
        key = self._key(digest)
        if not self.fs.exists(key):
            raise NotFoundError(f"artifact {digest[:12]} not found in {self.url}")
        return Path(key)

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._key(digest)))

    # -- writes ----------------------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its digest. Idempotent."""
        digest = sha256_bytes(data)
        key = self._key(digest)
        if self.fs.exists(key):
            return digest
        parent = key.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.is_local:
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, key)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, key)
        return digest

    def put_file(self, path: str | Path) -> str:
        """Store a local file's bytes; returns its digest."""
        digest = sha256_file(path)
        if self.exists(digest):
            return digest
        stored = self.put_bytes(Path(path).read_bytes())
        if stored != digest:
            raise DataError(f"{path} changed while it was being stored")
        return digest

    def put_json(self, obj: Any) -> str:
        """Store a JSON document (sorted keys, so equal documents share a digest)."""
        return self.put_bytes(json.dumps(obj, sort_keys=True, indent=1).encode())

    # -- reads -----------------------------------------------------------------------------------
    def get_bytes(self, digest: str) -> bytes:
        key = self._key(digest)
        try:
            with self.fs.open(key, "rb") as f:
                data: bytes = f.read()
        except FileNotFoundError:
            raise NotFoundError(f"artifact {digest[:12]} not found in {self.url}") from None
        if sha256_bytes(data) != digest:
            raise DataError(f"artifact {digest[:12]} is corrupt (hash mismatch)")
        return data

    def get_json(self, digest: str) -> Any:
        return json.loads(self.get_bytes(digest))

    def digests(self) -> Iterator[str]:
        """Every stored digest."""
        base = f"{self.root}/sha256"
        if not self.fs.exists(base):
            return
        for path in self.fs.find(base):
            name = path.rsplit("/", 1)[-1]
            if not name.startswith(".tmp-"):
                yield name

    # -- model weights -----------------------------------------------------------------------------
    @staticmethod
    def tensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
        """The safetensors bytes :meth:`put_tensors` stores (so callers can compute the digest first).

        safetensors writes metadata keys in hash order: they are folded into one sorted JSON value
        so that equal tensors + metadata always give the same bytes, hence the same digest.
        """
        from safetensors.torch import save

        payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta = {"modelfab": json.dumps(dict(metadata), sort_keys=True)} if metadata else None
        return bytes(save(payload, metadata=meta))

    def put_tensors(self, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> str:
        """Store a dict of torch tensors as safetensors; returns the digest."""
        return self.put_bytes(self.tensors_bytes(tensors, metadata))

    def get_tensors(self, digest: str) -> dict[str, Any]:
        """Load a safetensors artifact into a dict of CPU torch tensors."""
        from safetensors.torch import load

        try:
            return dict(load(self.get_bytes(digest)))
        except Exception as exc:  # safetensors raises its own error types for malformed headers
            raise DataError(f"artifact {digest[:12]} is not a valid safetensors file: {exc}") from exc
