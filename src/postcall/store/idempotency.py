"""The store's part in idempotent requests, and the secrets the server keeps.

An ``Idempotency-Key`` is reserved for one request (identified by its fingerprint)
before the request runs, and holds that request's response once it succeeded:

    reserve ──> (runs) ──> complete: the response is kept for ``ttl_s``
                      └──> release:  the request failed and changed nothing; the key
                                     is free again

A reservation whose process died is taken over once ``lock_s`` has passed. Keys are
scoped per tenant. Both backends implement ``IdempotencyStore`` as a mixin of their
store class (``store/sqlite_idempotency.py``, ``store/redis_idempotency.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredResponse:
    """A response kept for replay (postcall's creating endpoints answer JSON text)."""

    status: int
    body: str
    content_type: str = "application/json"


@dataclass(frozen=True)
class IdempotencyEntry:
    """What a key holds: the fingerprint of its request and, once done, its response."""

    fingerprint: str
    response: StoredResponse | None
    """None while the first request is still running."""


class IdempotencyStore(Protocol):
    """Idempotency keys and server secrets (part of the ``Store`` port)."""

    def idempotency_reserve(
        self, tenant: str, key: str, fingerprint: str, *, lock_s: float
    ) -> IdempotencyEntry | None:
        """Reserve ``key`` for the request ``fingerprint``: None when it is now reserved
        (the caller runs the request), else the entry already there (atomic: of many
        callers at once, exactly one gets None)."""
        ...

    def idempotency_complete(
        self, tenant: str, key: str, fingerprint: str, response: StoredResponse, *, ttl_s: float
    ) -> None:
        """Keep the response of the request that reserved ``key``, for ``ttl_s``."""

    def idempotency_release(self, tenant: str, key: str, fingerprint: str) -> None:
        """Free ``key`` if ``fingerprint`` still holds it unanswered (the request failed)."""

    def server_secret(self, name: str, candidate: str) -> str:
        """The secret kept under ``name``; the first caller's ``candidate`` becomes it
        (atomic, so every process sharing the store agrees)."""
        ...
