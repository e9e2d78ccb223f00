"""ASGI middleware shared by postcall's HTTP apps."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postcall.errors import PayloadTooLarge

# Multipart framing and the small text fields beside the file.
FORM_OVERHEAD = 1024 * 1024


class UploadLimit:
    """Refuses request bodies over the upload cap, before and while they stream in.

    A declared ``Content-Length`` over the cap is answered at once with ``render``'s
    response; a body that grows past it while streaming raises ``PayloadTooLarge``
    inside the endpoint that reads it (the app's error handler answers).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, render: Callable[[PayloadTooLarge], Response]
    ) -> None:
        self.app = app
        self.limit = max_bytes
        self.max_bytes = max_bytes + FORM_OVERHEAD
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.render(self.too_large())(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self.too_large()
            return message

        await self.app(scope, counted, send)

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the upload is larger than the limit of {self.limit} bytes (POSTCALL_MAX_UPLOAD_BYTES)"
        )
