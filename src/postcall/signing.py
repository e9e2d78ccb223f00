"""Signed, expiring links to objects postcall serves itself (HMAC-SHA256).

A link's token is ``<payload>.<signature>``: the payload names the object, its tenant
and the expiry time (base64url JSON), the signature is an HMAC-SHA256 of the payload
under a key derived from the server's secret. Holding a token lets anyone fetch that
one object until it expires; changing any byte of it voids the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from postcall.errors import Forbidden

_PURPOSE = b"postcall signed link v1"


@dataclass(frozen=True)
class LinkTarget:
    """What a valid token grants access to."""

    kind: str
    tenant: str
    object_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and checks link tokens with a key derived from ``secret``.

    ``secret`` is a callable so that the key can be fetched lazily (from the store)
    the first time a link is made or checked.
    """

    def __init__(self, secret: Callable[[], str], *, clock: Callable[[], float] = time.time):
        self._secret = secret
        self._key: bytes | None = None
        self._clock = clock

    def _mac(self, payload: str) -> bytes:
        if self._key is None:
            self._key = hmac.new(self._secret().encode(), _PURPOSE, hashlib.sha256).digest()
        return hmac.new(self._key, payload.encode(errors="replace"), hashlib.sha256).digest()

    def sign(self, kind: str, tenant: str, object_id: str, *, ttl_s: int) -> str:
        expires = int(self._clock()) + ttl_s
        payload = _b64(json.dumps([kind, tenant, object_id, expires]).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def verify(self, token: str, kind: str) -> LinkTarget:
        """The target of a valid, unexpired token of ``kind``; ``Forbidden`` otherwise."""
        payload, _, signature = token.partition(".")
        # Compared as text, not decoded: base64 has spare bits, so two spellings can
        # decode alike, and a link must be refused when any character of it changed.
        expected = _b64(self._mac(payload)).encode()
        if not hmac.compare_digest(signature.encode(errors="replace"), expected):
            raise Forbidden("the link is not valid (its signature does not match)")
        try:
            got_kind, tenant, object_id, expires = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):
            raise Forbidden("the link is not valid") from None
        if got_kind != kind:
            raise Forbidden("the link is not valid for this object")
        if int(expires) <= self._clock():
            raise Forbidden("the link has expired: fetch the object again for a fresh link")
        return LinkTarget(str(got_kind), str(tenant), str(object_id), int(expires))
