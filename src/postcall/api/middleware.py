"""ASGI middleware shared by postcall's HTTP apps."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postcall.api.deps import transcription_enabled
from postcall.api.schemas import error_responses
from postcall.errors import PayloadTooLarge
from postcall.metadata import parse_json

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


JSON_BODY_OVERHEAD = 64 * 1024
"""What a JSON body may hold besides its metadata (ids, options, a provider block)."""


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is checked before FastAPI parses it.

    Python's parser recurses (10,000 nested brackets are a ``RecursionError``) and takes
    ``NaN``, ``Infinity`` and lone surrogates, which are stored and then fail every
    response that renders them. ``postcall.metadata.parse_json`` refuses those with a
    422 naming the field; a body over the metadata limit plus ``JSON_BODY_OVERHEAD`` is
    a 413 before it is parsed.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if request.method in ("POST", "PUT", "PATCH") and _is_json(content_type):
                body = await request.body()
                limit = _metadata_limit(request) + JSON_BODY_OVERHEAD
                if len(body) > limit:
                    raise PayloadTooLarge(f"a JSON body may be at most {limit} bytes")
                if body:
                    parse_json(body, "body")
            return await handler(request)

        return checked


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _metadata_limit(request: Request) -> int:
    limit: int = request.app.state.components.settings.max_metadata_bytes
    return limit


def v1_routers() -> tuple[APIRouter, APIRouter]:
    """The native API's two routers under ``/v1``: one for recordings, one for the
    transcription routes that TRANSCRIPTION_POST_ENABLED=false switches off."""
    common = error_responses(401, 404, 422, 503)
    plain = APIRouter(prefix="/v1", responses=common, route_class=StrictJsonRoute)
    switched = APIRouter(
        prefix="/v1",
        route_class=StrictJsonRoute,
        dependencies=[Depends(transcription_enabled)],
        responses=common,
    )
    return plain, switched
