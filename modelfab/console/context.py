"""Per-app console state and the role checks every ``/api/console`` route goes through."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from modelfab.serve.auth import ANONYMOUS, ROLES, KeyVerifier, Principal, role_rank, token_from_headers
from modelfab.serve.inputs import ApiError
from modelfab.store.store import Store


@dataclass
class ConsoleContext:
    """What the console routes share: the store (opened once, lazily), key checks, child processes."""

    store_factory: Callable[[], Store]
    auth: bool = True
    bench_dir: Path | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # run id -> its resume driver
    _store: Store | None = None
    _verifier: KeyVerifier | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = self.store_factory()
            return self._store

    def verify(self, token: str) -> Principal:
        with self._lock:
            if self._verifier is None:
                self._verifier = KeyVerifier(self._store or self.store_factory())
        return self._verifier(token)

    def reap(self) -> None:
        """Forget finished child processes (resumed pipeline drivers), so none stays a zombie."""
        for run_id, proc in list(self.children.items()):
            if proc.poll() is not None:
                del self.children[run_id]


def context(request: Request) -> ConsoleContext:
    ctx: ConsoleContext = request.app.state.console
    return ctx


def caller(request: Request) -> Principal:
    """The key's principal (401 without a valid key; everyone is admin when auth is off)."""
    ctx = context(request)
    if not ctx.auth:
        return ANONYMOUS
    token = token_from_headers(request.headers)
    if not token:
        raise ApiError(401, "unauthorized", "sign in: an API key is required (Authorization: Bearer <key>)")
    return ctx.verify(token)


def require(principal: Principal, role: str, action: str) -> None:
    """403 unless ``principal`` has ``role`` or above."""
    if role_rank(principal.role) < role_rank(role):
        raise ApiError(403, "forbidden", f"role {principal.role} may not {action}; it needs {role} or above")


Ctx = Annotated[ConsoleContext, Depends(context)]
Caller = Annotated[Principal, Depends(caller)]  # any valid key: viewer or above reads


def who(principal: Principal) -> str:
    """How a decision is recorded: the key's name and id."""
    return f"{principal.name} ({principal.key_id})" if principal.name else principal.key_id


__all__ = ["ROLES", "Caller", "ConsoleContext", "Ctx", "caller", "require", "who"]
