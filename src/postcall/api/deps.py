"""Request dependencies: the components, and the caller's tenant from its API key."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from postcall.domain import ApiKey, utcnow
from postcall.errors import FeatureDisabled, Unauthorized
from postcall.service import Service
from postcall.store.base import Store
from postcall.wiring import Components

DEFAULT_TENANT = "default"
LAST_USED_EVERY = timedelta(seconds=60)
"""How stale a key's recorded last use may get before a request writes it again."""

log = logging.getLogger(__name__)


def hash_key(key: str) -> str:
    """How API keys are kept: only this hash is ever stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def components(request: Request) -> Components:
    c: Components = request.app.state.components
    return c


async def service(request: Request) -> Service:
    return components(request).service


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "").strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and rest.strip():
        return rest.strip()
    return header  # the bare key


async def tenant(request: Request) -> str:
    """The tenant of the presented API key; 401 without a valid one.

    A dependency run on the event loop: only a stored key's lookup (and the note of its
    use) goes to a worker thread, so a request pays no thread hand-off for its caller's
    identity when the key is a configured one."""
    c = components(request)
    key = _presented_key(request)
    if key is None:
        if c.settings.auth == "disabled":
            return DEFAULT_TENANT
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    digest = hash_key(key)
    # Compare against every configured key without stopping early (constant time).
    matched = False
    for static in c.settings.static_api_keys:
        matched |= hmac.compare_digest(digest, hash_key(static))
    if matched:
        return DEFAULT_TENANT
    found = await run_in_threadpool(_stored_tenant, c.store, digest)
    if found is not None:
        return found
    if c.settings.auth == "disabled":
        return DEFAULT_TENANT
    raise Unauthorized("the API key is not valid")


def _stored_tenant(store: Store, digest: str) -> str | None:
    stored = store.get_api_key(digest)  # looked up every time: a revoked key fails at once
    if stored is None:
        return None
    _note_use(store, stored)
    return stored.tenant


def _note_use(store: Store, key: ApiKey) -> None:
    """Keep the key's last use, writing at most once a minute per key (not per request)."""
    if key.last_used_at is not None and utcnow() - key.last_used_at < LAST_USED_EVERY:
        return
    try:
        store.touch_api_key(key.key_hash)
    except Exception:  # bookkeeping only: a busy store must not refuse the request
        log.warning("could not record the use of API key %s", key.id, exc_info=True)


async def transcription_enabled(request: Request) -> None:
    if not components(request).settings.transcription_post_enabled:
        raise FeatureDisabled(
            "the transcription endpoints are disabled on this server "
            "(TRANSCRIPTION_POST_ENABLED=false)"
        )


Tenant = Annotated[str, Depends(tenant)]
Svc = Annotated[Service, Depends(service)]
