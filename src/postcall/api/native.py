"""The native API: recordings, and the documented transcription contract."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from postcall import edits, formats
from postcall.api.deps import Svc, Tenant, components
from postcall.api.idempotency import idempotent
from postcall.api.middleware import v1_routers
from postcall.api.schemas import (
    ImportRecording,
    RegisterRecording,
    SpeakerOptions,
    TranscribeAccepted,
    TranscribeRequest,
    TranscriptionView,
    error_responses,
    recording_view,
    transcription_view,
)
from postcall.api.uploads import in_thread, receive_upload
from postcall.domain import Recording, TranscriptionStatus
from postcall.errors import EmptyFile, FeatureDisabled, InvalidInput
from postcall.fetch import check_url_shape
from postcall.metadata import MAX_DEPTH, parse_json
from postcall.service import Service

router, transcriptions = v1_routers()

MAX_TRACKS = 32
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="nextCursor of the previous page.")]

_UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {
                            "type": "string",
                            "description": 'JSON object, e.g. {"participants": [{"id": '
                            '"1", "name": "Alice"}]}',
                        },
                        "id": {
                            "type": "string",
                            "description": "Client-chosen recording id (optional).",
                        },
                        "tracks": {
                            "type": "string",
                            "description": "With several files (one per participant): JSON "
                            'list, for each file in order, {"participant_id": "u1", '
                            '"offset": 0.0}.',
                        },
                    },
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "title": "Register",
                            "type": "object",
                            "required": ["object_key"],
                            "additionalProperties": False,
                            "properties": {
                                "object_key": {
                                    "type": "string",
                                    "description": "Key of media already in the bucket, "
                                    "under the configured prefix.",
                                },
                                "metadata": {"type": "object"},
                                "id": {"type": "string"},
                            },
                        },
                        {
                            "title": "Import from a URL",
                            "type": "object",
                            "required": ["url"],
                            "additionalProperties": False,
                            "properties": {
                                "url": {
                                    "type": "string",
                                    "maxLength": 4096,
                                    "description": "http(s) URL of the recording, fetched "
                                    "now: a public host (or one in "
                                    "POSTCALL_ALLOWED_NETWORKS), no credentials, at most 5 "
                                    "redirects, at most POSTCALL_MAX_UPLOAD_BYTES, within "
                                    "POSTCALL_URL_IMPORT_TIMEOUT_S.",
                                },
                                "metadata": {"type": "object"},
                                "id": {"type": "string"},
                            },
                        },
                    ]
                }
            },
        },
    }
}


@router.post(
    "/recordings",
    status_code=201,
    openapi_extra=_UPLOAD_SCHEMA,
    responses=error_responses(400, 409, 413, 415),
)
async def create_recording(request: Request, tenant: Tenant, svc: Svc) -> Response:
    """Upload a recording (multipart: ``file``, optional ``metadata`` JSON and ``id``),
    register one already in the bucket (JSON: ``object_key``, ``metadata``, ``id``), or
    import one from a URL (JSON: ``url``, ``metadata``, ``id``).

    A URL import is fetched during the request and answered 201 once stored, like an
    upload. Refused: a URL that is not http(s), carries credentials or leads (at any
    redirect) to a non-public host (422 ``url_not_allowed``); a remote error status or
    network error (422 ``fetch_failed``, with the status or error); more than
    POSTCALL_URL_IMPORT_TIMEOUT_S in all (422 ``fetch_timeout``); a file over the
    upload limit (413); a file that is not audio or video media (415).

    With an ``Idempotency-Key`` header, a retry returns the first response."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        raw = await request.body()
        if _is_import(raw):
            return await _import(request, tenant, svc, raw)
        try:
            body = RegisterRecording.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from None

        async def register() -> Response:
            recording = await run_in_threadpool(
                svc.register_recording,
                tenant,
                body.object_key,
                metadata=body.metadata,
                recording_id=body.id,
            )
            return JSONResponse(recording_view(recording), status_code=201)

        return await idempotent(request, tenant, register)
    if not content_type.startswith("multipart/form-data"):
        raise InvalidInput(
            "send the recording as multipart/form-data with a 'file' field, or JSON with "
            "an 'object_key'",
            field="file",
        )
    form = await receive_upload(request, svc, max_files=MAX_TRACKS, max_fields=16)
    handed_over = False
    try:
        if not form.files:
            raise InvalidInput("the 'file' field with the recording is missing", field="file")
        metadata = _json_field(form.fields.get("metadata"), "metadata", dict) or {}
        tracks = _json_field(form.fields.get("tracks"), "tracks", list)
        if tracks is None and len(form.files) > 1:
            raise InvalidInput(
                "several files need a 'tracks' field: a JSON list with, for each file in "
                'order, {"participant_id": …, "offset": seconds}',
                field="tracks",
            )
        rec_id = form.fields.get("id")

        async def store() -> Response:
            nonlocal handed_over
            handed_over = True  # from here on, a refusal deletes the files itself
            recording = await run_in_threadpool(
                svc.create_recording_from_uploads,
                tenant,
                form.files,
                tracks=tracks,
                metadata=metadata,
                recording_id=rec_id or None,
            )
            return JSONResponse(recording_view(recording), status_code=201)

        return await idempotent(request, tenant, store)
    finally:
        if not handed_over:  # refused, or an Idempotency-Key replay: keep nothing
            await run_in_threadpool(svc.discard_uploads, form.files)


def _is_import(raw: bytes) -> bool:
    """Whether a JSON body asks for an import from a URL (it names a ``url``)."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "url" in parsed


async def _import(request: Request, tenant: str, svc: Service, raw: bytes) -> Response:
    """POST /v1/recordings with a ``url``: fetched in a thread of its own (never in the
    event loop, nor in the shared pool), streamed once into the blob store."""
    try:
        body = ImportRecording.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    fetcher = components(request).fetcher
    if fetcher is None:
        raise FeatureDisabled("imports from a URL are not set up in this process")
    check_url_shape(body.url)  # before an Idempotency-Key is reserved for it

    def fetch_and_store() -> Recording:
        try:
            return svc.create_recording_from_source(
                tenant,
                lambda: fetcher.open(body.url),
                metadata=body.metadata,
                recording_id=body.id,
            )
        except EmptyFile:
            raise EmptyFile("the file at the URL is empty (0 bytes)", field="url") from None

    async def run() -> Response:
        loop = asyncio.get_running_loop()
        recording = await in_thread(loop, fetch_and_store, name="postcall-url-import")
        return JSONResponse(recording_view(recording), status_code=201)

    return await idempotent(request, tenant, run)


def _json_field(raw: object, name: str, kind: type) -> Any:
    """A form field holding JSON of the given kind (dict or list), or None when absent;
    parsed strictly (``postcall.metadata``: bounded nesting, finite numbers, valid text)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidInput(f"{name} must be JSON in a text field", field=name)
    value = parse_json(raw, name, max_depth=MAX_DEPTH)
    if not isinstance(value, kind):
        raise InvalidInput(
            f"{name} must be a JSON {'object' if kind is dict else 'list'}", field=name
        )
    return value


@router.get("/recordings")
def list_recordings(tenant: Tenant, svc: Svc, limit: Limit = 50, cursor: Cursor = None) -> Any:
    page = svc.list_recordings(tenant, limit=limit, cursor=cursor)
    return {"data": [recording_view(r) for r in page.items], "nextCursor": page.next_cursor}


@router.get("/recordings/{recording_id}")
def get_recording(recording_id: str, tenant: Tenant, svc: Svc) -> Any:
    return recording_view(svc.get_recording(tenant, recording_id))


@router.delete("/recordings/{recording_id}", status_code=204)
def delete_recording(recording_id: str, tenant: Tenant, svc: Svc) -> Response:
    """Delete a recording with its transcriptions and every stored file."""
    svc.delete_recording(tenant, recording_id)
    return Response(status_code=204)


@transcriptions.post(
    "/recordings/{recording_id}/transcribe",
    status_code=202,
    response_model=TranscribeAccepted,
    responses=error_responses(409),
)
async def transcribe(
    recording_id: str,
    request: Request,
    tenant: Tenant,
    svc: Svc,
    body: Annotated[TranscribeRequest | None, Body()] = None,
) -> Response:
    """Queue a transcription; poll ``GET /v1/transcriptions/{id}``.

    A recording has at most POSTCALL_MAX_TRANSCRIPTS_PER_RECORDING (10) transcriptions
    (409 ``transcript_limit``). With an ``Idempotency-Key``, a retry returns the first
    response."""
    body = body or TranscribeRequest()
    speakers = body.speakers or SpeakerOptions()

    async def queue() -> Response:
        t = await run_in_threadpool(
            svc.request_transcription,
            tenant,
            recording_id,
            language=body.language,
            speakers=speakers.mode,
            num_speakers=speakers.num_speakers,
            min_speakers=speakers.min_speakers,
            max_speakers=speakers.max_speakers,
            prompt=body.prompt,
            enroll_voiceprints=body.enroll_voiceprints,
            match_voiceprints=body.match_voiceprints,
        )
        return JSONResponse({"transcriptionId": t.id, "status": "queued"}, status_code=202)

    return await idempotent(request, tenant, queue)


@transcriptions.get("/recordings/{recording_id}/transcriptions")
def list_recording_transcriptions(
    recording_id: str, tenant: Tenant, svc: Svc, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    page = svc.list_transcriptions(tenant, recording_id=recording_id, limit=limit, cursor=cursor)
    standing = edits.standings(svc, page.items)
    return {
        "data": [transcription_view(t, standing=standing.get(t.id)) for t in page.items],
        "nextCursor": page.next_cursor,
    }


@transcriptions.get(
    "/transcriptions/{transcription_id}",
    response_model=TranscriptionView,
    response_model_exclude_none=True,
)
def get_transcription(transcription_id: str, tenant: Tenant, svc: Svc) -> Any:
    """Status; once completed, the transcript as ``[HH:MM:SS] Speaker: text`` lines.
    While queued or processing: ``progress``, ``queuePosition`` and ``etaSeconds``
    (null when unknown)."""
    t = svc.get_transcription(tenant, transcription_id)
    text = None
    if t.status is TranscriptionStatus.COMPLETED:
        text = formats.to_text_lines(svc.load_document(t))
    # Answered as built: only the fields of the status, and a null estimate stays null.
    return JSONResponse(transcription_view(t, text, standing=edits.standings(svc, [t]).get(t.id)))


@transcriptions.get("/transcriptions/{transcription_id}/transcript", responses=error_responses(409))
def get_transcript(
    transcription_id: str,
    tenant: Tenant,
    svc: Svc,
    format: Literal["txt", "srt", "vtt", "json", "recall"] = "json",
) -> Response:
    """The finished transcript as txt, srt, vtt, json (segments with word timings) or
    recall (the Recall.ai download shape: participant blocks with their words)."""
    document = svc.get_document(tenant, transcription_id)
    return Response(
        formats.render(document, format),
        media_type=formats.FORMATS[format],
        headers={"Content-Disposition": f'inline; filename="{transcription_id}.{format}"'},
    )


@transcriptions.delete("/transcriptions/{transcription_id}", status_code=204)
def delete_transcription(transcription_id: str, tenant: Tenant, svc: Svc) -> Response:
    svc.delete_transcription(tenant, transcription_id)
    return Response(status_code=204)
