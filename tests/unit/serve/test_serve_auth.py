"""API keys: stored hashed, roles ordered, scopes enforced, revocation honoured."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.serve.auth import KeyVerifier, Principal, create_key, list_keys, revoke_key, verify
from modelfab.serve.inputs import ApiError
from modelfab.store.schema import ApiKey
from modelfab.store.store import Store


def test_key_is_stored_hashed_and_verifies(store: Store) -> None:
    row, token = create_key(store, "annotator", name="labeler")
    assert token.startswith("mfk_")
    secret = token.split("_", 2)[2]
    with store.session() as s:
        stored = s.scalars(select(ApiKey)).one()
    assert secret not in (stored.secret_hash, stored.salt) and len(stored.secret_hash) == 64
    p = verify(store, token)
    assert (p.key_id, p.role, p.name, p.models) == (row.id, "annotator", "labeler", None)
    _, other = create_key(store, "annotator")
    assert verify(store, other).key_id != row.id  # same role, different salt and secret
    with pytest.raises(ApiError, match="invalid"):
        verify(store, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])
    with pytest.raises(ApiError, match="malformed"):
        verify(store, "not-a-key")


def test_roles_are_ordered() -> None:
    allowed = {
        "viewer": {"read", "predict", "metrics"},
        "annotator": {"read", "predict", "metrics", "feedback"},
        "engineer": {"read", "predict", "metrics", "feedback", "promote"},
        "admin": {"read", "predict", "metrics", "feedback", "promote", "keys"},
    }
    for role, actions in allowed.items():
        p = Principal("k", "", role)
        for action in ("read", "predict", "metrics", "feedback", "promote", "keys"):
            assert p.can(action) == (action in actions), (role, action)
    with pytest.raises(ApiError) as exc:
        Principal("k", "", "viewer").require("feedback")
    assert exc.value.http_status == 403


def test_scopes(store: Store) -> None:
    with pytest.raises(NotFoundError):
        create_key(store, "viewer", ["no-such-model"])
    with pytest.raises(ConfigError, match="role"):
        create_key(store, "superuser")
    p = Principal("k", "", "viewer", ("solar",))
    assert p.in_scope({"m-1", "solar", "solar@production"}) and not p.in_scope({"m-2", "other"})
    assert Principal("k", "", "viewer").in_scope({"anything"})


def test_revoke_and_cache(store: Store) -> None:
    row, token = create_key(store, "viewer")
    cached = KeyVerifier(store, ttl_s=60)
    fresh = KeyVerifier(store, ttl_s=0)
    assert cached(token).key_id == row.id and fresh(token).key_id == row.id
    revoke_key(store, row.id)
    assert cached(token).key_id == row.id  # within the cache time
    with pytest.raises(ApiError, match="revoked"):
        fresh(token)
    assert list_keys(store)[0].revoked_at is not None
    with pytest.raises(NotFoundError):
        revoke_key(store, "k-nope")
