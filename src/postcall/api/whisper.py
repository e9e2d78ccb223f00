"""postcall as a Whisper service: OpenAI-compatible ``POST /v1/audio/transcriptions``.

``postcall whisper-server`` serves one engine (normally the in-process faster-whisper
model) to other machines, such as postcall workers with ``WHISPER_URL`` set, or any
OpenAI client. The upload is decoded with PyAV (any container), inference runs in a
worker thread, one at a time per process, and errors come back in OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

import postcall
from postcall import audio
from postcall.api.middleware import UploadLimit
from postcall.domain import Segment
from postcall.engines.base import Engine, EngineOptions, EngineResult
from postcall.errors import (
    EngineUnavailable,
    InvalidInput,
    MediaError,
    ModelUnavailable,
    PayloadTooLarge,
    PostcallError,
)
from postcall.formats import format_timestamp
from postcall.languages import normalize_language

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
"""What ``response_format`` may ask for."""

_COPY_BLOCK = 1024 * 1024
_HEADER_SAFE = re.compile(r"[\w.:/@+-]{1,128}", re.ASCII)  # a model name that is safe to echo

# The one table, most specific class first: error -> (HTTP status, OpenAI error type).
_ERRORS: tuple[tuple[type[PostcallError], int, str], ...] = (
    (PayloadTooLarge, 413, "invalid_request_error"),
    (InvalidInput, 400, "invalid_request_error"),
    (MediaError, 400, "invalid_request_error"),
    (ModelUnavailable, 503, "server_error"),
    (EngineUnavailable, 503, "server_error"),
)


def openai_error(
    status: int, message: str, *, type_: str, code: str | None, param: str | None = None
) -> JSONResponse:
    """An error in the shape OpenAI's API (and its client libraries) use."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def error_response(exc: PostcallError) -> JSONResponse:
    status, type_ = 500, "server_error"
    for cls, cls_status, cls_type in _ERRORS:
        if isinstance(exc, cls):
            status, type_ = cls_status, cls_type
            break
    param = getattr(exc, "field", None)
    return openai_error(status, exc.message, type_=type_, code=exc.code, param=param)


class _Warmup:
    """Loads the engine's model in the background at startup, and remembers how it went."""

    def __init__(self, engine: Engine) -> None:
        load = getattr(engine, "load", None)
        self._load: Callable[[], object] | None = load if callable(load) else None
        self.ready = threading.Event()
        self.error: PostcallError | None = None
        if self._load is None:
            self.ready.set()

    def start(self) -> None:
        if self._load is not None and not self.ready.is_set():
            threading.Thread(target=self._run, name="whisper-warmup", daemon=True).start()

    def _run(self) -> None:
        assert self._load is not None
        try:
            self._load()
        except PostcallError as exc:
            self.error = exc
            log.error("the Whisper model could not be loaded: %s", exc.message)
        except Exception as exc:  # reported on /health and by every request
            self.error = ModelUnavailable(f"the Whisper model could not be loaded: {exc}")
            log.exception("the Whisper model could not be loaded")
        finally:
            self.ready.set()


def create_whisper_app(
    engine: Engine,
    *,
    model_name: str,
    max_upload_bytes: int,
    max_duration_s: float = 4 * 3600.0,
) -> FastAPI:
    """An OpenAI-compatible transcription service over ``engine``.

    ``model_name`` is what ``GET /v1/models`` lists (a directory is listed by its last
    part); the ``model`` a request names is echoed in the ``x-model`` header, not used.
    Uploads over ``max_upload_bytes`` are refused with 413; audio that decodes to more
    than ``max_duration_s`` (whatever its header says) with 400 ``duration_exceeded``.
    """
    warmup = _Warmup(engine)
    inference = threading.Lock()  # one inference at a time per process
    served = _model_id(model_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warmup.start()
        yield

    app = FastAPI(
        title="postcall Whisper service",
        version=postcall.__version__,
        description="OpenAI-compatible speech to text over postcall's Whisper engine.",
        lifespan=lifespan,
    )
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes, render=error_response)

    @app.exception_handler(PostcallError)
    async def _postcall_error(request: Request, exc: PostcallError) -> JSONResponse:
        response = error_response(exc)
        if response.status_code >= 500:
            log.error("transcription failed: %s", exc)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return openai_error(
            exc.status_code, str(exc.detail), type_="invalid_request_error", code=code
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return openai_error(500, "internal server error", type_="server_error", code=None)

    @app.get("/health")
    def health() -> JSONResponse:
        """200 once the model is loaded; 503 while it loads or when it cannot."""
        if warmup.error is not None:
            body: dict[str, Any] = {"status": "error", "model": served}
            body["error"] = {"code": warmup.error.code, "message": warmup.error.message}
            return JSONResponse(body, status_code=503)
        if not warmup.ready.is_set():
            return JSONResponse({"status": "loading", "model": served}, status_code=503)
        return JSONResponse({"status": "ok", "model": served})

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        """The served model, and ``whisper-1`` (what OpenAI clients ask for by default)."""
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "postcall"}
                for name in dict.fromkeys((served, "whisper-1"))
            ],
        }

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        """Transcribe the uploaded ``file`` (multipart), OpenAI's way."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInput("send the audio as multipart/form-data with a 'file' field")
        form = await request.form(max_files=1, max_fields=32)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("the 'file' field with the audio is missing", field="file")
            if upload.size is not None and upload.size > max_upload_bytes:
                raise PayloadTooLarge(
                    f"the file is larger than the upload limit of {max_upload_bytes} bytes"
                )
            params = _Params(form)
            started = time.monotonic()
            samples = await run_in_threadpool(
                _decode_upload, upload.file, upload.filename, max_duration_s
            )
        finally:
            await form.close()
        if warmup.error is not None:
            raise warmup.error
        options = EngineOptions(
            language=params.language, word_timestamps=params.want_words, prompt=params.prompt
        )

        def infer() -> EngineResult:
            with inference:
                return engine.transcribe(samples, options)

        result = await run_in_threadpool(infer)
        duration = samples.size / audio.SAMPLE_RATE
        log.info(
            "transcribed %.1f s of audio in %.1f s (language %s, %d segments)",
            duration,
            time.monotonic() - started,
            result.language,
            len(result.segments),
        )
        response = _render(result, duration, params)
        echoed = params.model if params.model and _HEADER_SAFE.fullmatch(params.model) else None
        response.headers["x-model"] = echoed or served
        return response

    return app


class _Params:
    """The form fields of a transcription request, checked."""

    def __init__(self, form: FormData) -> None:
        self.model = _text(form, "model")
        self.prompt = _text(form, "prompt")
        self.response_format = (_text(form, "response_format") or "json").lower()
        if self.response_format not in RESPONSE_FORMATS:
            raise InvalidInput(
                f"response_format {self.response_format!r} is not supported; use one of "
                f"{', '.join(RESPONSE_FORMATS)}",
                field="response_format",
            )
        try:
            self.language = normalize_language(_text(form, "language") or "auto", None)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="language") from None
        raw_temperature = _text(form, "temperature") or "0"
        try:
            self.temperature = float(raw_temperature)
        except ValueError:
            self.temperature = math.nan
        if not 0.0 <= self.temperature <= 1.0:
            raise InvalidInput(
                f"temperature must be a number from 0 to 1, not {raw_temperature!r}",
                field="temperature",
            )
        granularities = [
            str(v).strip().lower()
            for key in ("timestamp_granularities[]", "timestamp_granularities")
            for v in form.getlist(key)
        ]
        unknown = sorted(set(granularities) - {"word", "segment"})
        if unknown:
            raise InvalidInput(
                f"timestamp_granularities: {', '.join(unknown)} is not 'word' or 'segment'",
                field="timestamp_granularities[]",
            )
        self.granularities = set(granularities) or {"segment"}
        # Word timings cost inference time; compute them only when they are shown.
        self.want_words = self.response_format == "verbose_json" and ("word" in self.granularities)


def _text(form: FormData, key: str) -> str | None:
    value = form.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a text field, not a file", field=key)
    return value.strip() or None


def _decode_upload(file: IO[bytes], filename: str | None, max_s: float) -> audio.Audio:
    """Copy the upload to a named temporary file (PyAV wants a path) and decode it
    (all of it in memory, hence the limit on decoded seconds)."""
    suffix = Path(filename or "").suffix
    suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
    handle, path = tempfile.mkstemp(prefix="postcall-whisper-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            file.seek(0)
            shutil.copyfileobj(file, out, _COPY_BLOCK)
        blocks = list(audio.decode(path, block_s=30.0, max_s=max_s))
    finally:
        os.unlink(path)
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _model_id(model_name: str) -> str:
    """A directory is listed by its last part: clients need no server paths."""
    name = model_name.rstrip("/\\")
    return Path(name).name if os.sep in name or Path(name).is_dir() else name


# --- responses ------------------------------------------------------------------


def _render(result: EngineResult, duration: float, params: _Params) -> Response:
    segments = [s for s in result.segments if s.text.strip()]
    text = " ".join(s.text.strip() for s in segments)
    fmt = params.response_format
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        return PlainTextResponse(_srt(segments), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(_vtt(segments), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": text})
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": result.language,
        "duration": round(duration, 3),
        "text": text,
    }
    if "segment" in params.granularities:
        body["segments"] = [_segment(i, s, params) for i, s in enumerate(segments)]
    if "word" in params.granularities:
        body["words"] = [
            {"word": w.text, "start": w.start, "end": w.end, "probability": w.probability}
            for s in segments
            for w in s.words
        ]
    return JSONResponse(body)


def _segment(index: int, segment: Segment, params: _Params) -> dict[str, Any]:
    probabilities = [w.probability for w in segment.words if w.probability > 0]
    avg_logprob = (
        sum(math.log(p) for p in probabilities) / len(probabilities) if probabilities else 0.0
    )
    encoded = segment.text.encode("utf-8")
    body: dict[str, Any] = {
        "id": index,
        "seek": int(segment.start * 100),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": [],
        "temperature": params.temperature,
        "avg_logprob": avg_logprob,
        "compression_ratio": len(encoded) / len(zlib.compress(encoded)) if encoded else 0.0,
        "no_speech_prob": 0.0,
    }
    if "word" in params.granularities:
        body["words"] = [
            {"word": w.text, "start": w.start, "end": w.end, "probability": w.probability}
            for w in segment.words
        ]
    return body


def _srt(segments: list[Segment]) -> str:
    cues = [
        f"{i}\n{format_timestamp(s.start)} --> {format_timestamp(max(s.end, s.start))}\n"
        f"{' '.join(s.text.split())}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def _vtt(segments: list[Segment]) -> str:
    cues = [
        f"{format_timestamp(s.start, '.')} --> {format_timestamp(max(s.end, s.start), '.')}\n"
        f"{' '.join(s.text.split())}\n"
        for s in segments
    ]
    return "\n".join(["WEBVTT\n", *cues])
