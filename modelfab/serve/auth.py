"""API keys and roles.

A key is ``mfk_<id>_<secret>`` with a 32-byte random secret; the store keeps only a per-key salt
and ``sha256(salt + secret)`` (the secret is high-entropy, so a fast hash is enough), compared in
constant time. Roles are ordered: viewer < annotator < engineer < admin; each action needs a
minimum role, and a key with model scopes may predict and send feedback only for those models.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.serve.inputs import ApiError
from modelfab.store.schema import ApiKey, utcnow
from modelfab.store.store import Store, new_id

ROLES = ("viewer", "annotator", "engineer", "admin")
ACTIONS = {"read": "viewer", "predict": "viewer", "metrics": "viewer", "feedback": "annotator",
           "promote": "engineer", "keys": "admin"}
PREFIX = "mfk_"


def role_rank(role: str) -> int:
    if role not in ROLES:
        raise ConfigError(f"role: unknown {role!r}; use one of {', '.join(ROLES)}")
    return ROLES.index(role)


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name, role and model scopes (None: every model)."""

    key_id: str
    name: str
    role: str
    models: tuple[str, ...] | None = None

    def can(self, action: str) -> bool:
        return role_rank(self.role) >= role_rank(ACTIONS[action])

    def in_scope(self, names: set[str]) -> bool:
        """Whether a model known by any of ``names`` (id, name, name@alias ...) is in the key's scopes."""
        return self.models is None or bool(names & set(self.models))

    def require(self, action: str) -> None:
        if not self.can(action):
            raise ApiError(403, "forbidden", f"role {self.role} may not {action}; it needs {ACTIONS[action]} or above")


ANONYMOUS = Principal("-", "auth disabled", "admin")


def create_key(store: Store, role: str, models: list[str] | None = None, name: str = "") -> tuple[ApiKey, str]:
    """A new key; returns the row and the token (shown once, never stored)."""
    role_rank(role)
    scopes = sorted({m.strip() for m in models if m.strip()}) if models else None
    for ref in scopes or []:
        store.get_model(ref)  # unknown models fail now, not at request time
    key_id = new_id("k")
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    row = ApiKey(id=key_id, name=name, role=role, models=scopes, salt=salt, secret_hash=hash_secret(salt, secret))
    with store.transaction() as s:
        s.add(row)
    return row, f"{PREFIX}{key_id[2:]}_{secret}"


def revoke_key(store: Store, key_id: str) -> ApiKey:
    with store.transaction() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise NotFoundError(f"unknown key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
    return row


def list_keys(store: Store) -> list[ApiKey]:
    with store.session() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)).all())


def verify(store: Store, token: str) -> Principal:
    """The principal of ``token``; ApiError 401 when it is malformed, unknown, wrong or revoked."""
    parts = token[len(PREFIX) :].split("_", 1) if token.startswith(PREFIX) else []
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ApiError(401, "unauthorized", "malformed API key")
    with store.session() as s:
        row = s.get(ApiKey, f"k-{parts[0]}")
    if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(row.salt, parts[1])):
        raise ApiError(401, "unauthorized", "invalid API key")
    if row.revoked_at is not None:
        raise ApiError(401, "unauthorized", "API key revoked")
    return Principal(row.id, row.name, row.role, tuple(row.models) if row.models is not None else None)


class KeyVerifier:
    """:func:`verify` with a short cache (``ttl_s``), so a request costs no database read."""

    def __init__(self, store: Store, ttl_s: float = 5.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def __call__(self, token: str) -> Principal:
        now = time.monotonic()
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        principal = verify(self.store, token)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal


def token_from_headers(headers: Any) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "unauthorized", "use Authorization: Bearer <key>")
        return str(value.strip())
    key = headers.get("x-api-key")
    return str(key).strip() if key else None
