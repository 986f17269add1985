"""Error types. Every error a user can cause is a :class:`ModelfabError`.

The CLI prints ``error: <message>`` on one line and exits with :attr:`ModelfabError.exit_code`;
the REST layer maps :attr:`ModelfabError.http_status` to a 4xx JSON body.
"""

from __future__ import annotations


class ModelfabError(Exception):
    """Base class of every user-facing error (bad input, unknown names, broken files)."""

    exit_code: int = 2
    http_status: int = 400


class ConfigError(ModelfabError, ValueError):
    """A configuration value is invalid; the message names the field path."""


class NotFoundError(ModelfabError, LookupError):
    """A named thing (dataset, model, version, catalog entry) does not exist."""

    http_status = 404


class DataError(ModelfabError):
    """Input data is unusable: corrupt images, unknown items, escaping paths."""

    http_status = 422


class ConflictError(ModelfabError):
    """The request conflicts with the current state (duplicate name, busy database)."""

    http_status = 409


class MissingExtraError(ModelfabError):
    """An optional dependency is not installed; the message carries the install hint."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'modelfab[{extra}]'")
        self.package = package
        self.extra = extra
