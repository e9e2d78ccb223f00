"""The FastAPI application, and the one table that maps errors to HTTP."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import postcall
from postcall.api import console, edits, native, recall, voiceprints, webhooks
from postcall.api.idempotency import DigestBodies
from postcall.api.middleware import UploadLimit
from postcall.errors import (
    Conflict,
    DurationExceeded,
    EmptyFile,
    FeatureDisabled,
    FetchFailed,
    Forbidden,
    InvalidInput,
    InvalidWebhook,
    MediaError,
    NotFound,
    PayloadTooLarge,
    PostcallError,
    Unauthorized,
    Unavailable,
    Unsupported,
    UnsupportedMedia,
)
from postcall.wiring import Components

log = logging.getLogger(__name__)

# The one table: most specific class first.
HTTP_STATUS: tuple[tuple[type[PostcallError], int], ...] = (
    (EmptyFile, 400),
    (InvalidWebhook, 400),
    (Unsupported, 400),
    (InvalidInput, 422),
    (NotFound, 404),
    (FeatureDisabled, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
    (PayloadTooLarge, 413),
    (FetchFailed, 422),
    (UnsupportedMedia, 415),
    (DurationExceeded, 422),
    (MediaError, 422),
    (Unavailable, 503),
)

RETRY_AFTER_S = 5
"""What a 503 for a backend outage tells clients to wait before retrying (s)."""

QUEUE_DEPTH = Gauge("postcall_queue_depth", "Transcriptions waiting for a worker")


def status_for(exc: PostcallError) -> int:
    for cls, status in HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: PostcallError) -> JSONResponse:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    if exc.retryable:
        body["retryable"] = True
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, Unavailable):
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"error": body}, status_code=status_for(exc), headers=headers)


NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


def create_app(components: Components) -> FastAPI:
    app = FastAPI(
        title="postcall",
        version=postcall.__version__,
        description="Self-hosted asynchronous transcription of call and meeting recordings.",
        docs_url=None,  # served from installed files by ``console.mount``, not a CDN
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # FastAPI's built-in OpenTelemetry instrumentation: off. postcall exports
        # Prometheus metrics at /metrics; nothing is traced or sent elsewhere, and the
        # per-request span bookkeeping costs about a fifth of a status poll.
        telemetry=NO_TELEMETRY,
    )
    app.state.components = components
    app.include_router(native.router)
    app.include_router(native.transcriptions)
    app.include_router(edits.router)
    app.include_router(edits.transcriptions)
    app.include_router(webhooks.router)
    app.include_router(voiceprints.router)
    app.include_router(recall.router)
    console.mount(app)
    app.add_middleware(
        UploadLimit, max_bytes=components.settings.max_upload_bytes, render=error_response
    )
    app.add_middleware(DigestBodies)

    @app.exception_handler(PostcallError)
    async def _postcall_error(request: Request, exc: PostcallError) -> JSONResponse:
        if isinstance(exc, Unavailable):
            # Expected while a backend is down: one line per request, no traceback.
            log.warning("%s %s: 503 %s", request.method, request.url.path, exc)
        elif status_for(exc) >= 500:
            log.exception("request failed", exc_info=exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        message = f"{field}: {first.get('msg', 'invalid')}"
        if first.get("type") == "json_invalid":  # its loc is a character position, not a field
            where = loc[0] if loc else "?"
            field, message = "body", f"the body is not valid JSON (at character {where})"
        return JSONResponse(
            {
                "error": {
                    "code": "invalid_input",
                    "message": message,
                    "field": field,
                },
                "detail": [
                    {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors
                ],
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the framework could not parse the body (not JSON)
            return JSONResponse(
                {
                    "error": {
                        "code": "invalid_input",
                        "message": f"body: {exc.detail}",
                        "field": "body",
                    }
                },
                status_code=422,
            )
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        # The process's own metrics still answer while the store is down.
        with contextlib.suppress(Unavailable):
            QUEUE_DEPTH.set(components.store.queue_depth())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
