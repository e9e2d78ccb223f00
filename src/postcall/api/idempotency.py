"""``Idempotency-Key`` on the creating endpoints.

The first request with a key runs; its successful (2xx) response is kept for
``POSTCALL_IDEMPOTENCY_TTL_S`` (24 h) and replayed, status and body, to every later
request with the same key and the same request. The same key with another request is
refused (422 ``idempotency_key_reused``); while the first still runs, 409
``idempotency_in_flight``. A request that fails created nothing, so its key is freed
and the client may retry with it. Keys are scoped per tenant.

"The same request" is the method, path, query, content type and body. The body is
hashed as it streams in (``BodyDigest``, so uploads are never buffered for it); in a
multipart body the boundary token is left out of the hash, so a client that re-encodes
the same form (a new random boundary) on retry still sends "the same" request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postcall.api.deps import components
from postcall.errors import IdempotencyMismatch, InFlight, InvalidInput
from postcall.store.idempotency import StoredResponse

HEADER = "Idempotency-Key"
_SCOPE_KEY = "postcall.body_digest"
MAX_KEY_LENGTH = 255
LOCK_S = 3600.0
"""How long a reservation outlives a process that died while running its request."""


class BodyDigest:
    """SHA-256 of a request body fed in pieces, with ``blank`` (if any) left out."""

    def __init__(self, blank: bytes = b"") -> None:
        self._hash = hashlib.sha256()
        self._blank = blank
        self._pending = b""
        self.complete = False

    def update(self, chunk: bytes) -> None:
        if not self._blank:
            self._hash.update(chunk)
            return
        buf = self._pending + chunk
        out, start = bytearray(), 0
        while (found := buf.find(self._blank, start)) >= 0:
            out += buf[start:found]
            start = found + len(self._blank)
        rest = buf[start:]
        # The tail may be the start of a blank split across two pieces: hold it back.
        keep = max(0, len(rest) - (len(self._blank) - 1))
        out += rest[:keep]
        self._pending = rest[keep:]
        self._hash.update(out)

    def hexdigest(self) -> str:
        h = self._hash.copy()
        h.update(self._pending)
        return h.hexdigest()


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1", "replace")
    return b""


class DigestBodies:
    """ASGI middleware: hashes the body of POST requests that carry an Idempotency-Key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or b"idempotency-key" not in headers
        ):
            await self.app(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        multipart = content_type.lower().startswith("multipart/")
        digest = BodyDigest(_boundary(content_type) if multipart else b"")
        scope[_SCOPE_KEY] = digest

        async def hashed() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                digest.update(message.get("body", b""))
                if not message.get("more_body", False):
                    digest.complete = True
            return message

        await self.app(scope, hashed, send)


async def _fingerprint(request: Request) -> str:
    digest: BodyDigest | None = request.scope.get(_SCOPE_KEY)
    if digest is None:
        raise RuntimeError("DigestBodies middleware is not installed")
    if not digest.complete:
        await request.body()  # the endpoint read no body: read (and hash) it now
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    seen = f"{request.method} {request.url.path}?{request.url.query}\n{content_type}\n"
    return hashlib.sha256((seen + digest.hexdigest()).encode()).hexdigest()


def _checked_key(raw: str) -> str:
    key = raw.strip()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters "
            "(a UUID is a good key)",
            field=HEADER,
        )
    return key


async def idempotent(
    request: Request, tenant: str, run: Callable[[], Awaitable[Response]]
) -> Response:
    """Run ``run`` once per Idempotency-Key (see the module docstring).

    Call it after the endpoint has read the request body.
    """
    raw = request.headers.get(HEADER)
    if raw is None:
        return await run()
    key = _checked_key(raw)
    fingerprint = await _fingerprint(request)
    c = components(request)
    store = c.store
    entry = await run_in_threadpool(
        store.idempotency_reserve, tenant, key, fingerprint, lock_s=LOCK_S
    )
    if entry is not None:
        if entry.fingerprint != fingerprint:
            raise IdempotencyMismatch(
                f"{HEADER} {key!r} was used for another request; send a new key for a new request",
                field=HEADER,
            )
        if entry.response is None:
            raise InFlight(f"the first request with {HEADER} {key!r} is still running; retry later")
        kept = entry.response
        return Response(
            kept.body,
            status_code=kept.status,
            media_type=kept.content_type,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = await run()
    except BaseException:
        await run_in_threadpool(store.idempotency_release, tenant, key, fingerprint)
        raise
    if 200 <= response.status_code < 300:
        kept = StoredResponse(
            response.status_code,
            bytes(response.body).decode(),
            response.media_type or "application/json",
        )
        await run_in_threadpool(
            store.idempotency_complete,
            tenant,
            key,
            fingerprint,
            kept,
            ttl_s=c.settings.idempotency_ttl_s,
        )
    else:
        await run_in_threadpool(store.idempotency_release, tenant, key, fingerprint)
    return response
