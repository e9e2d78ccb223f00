"""The Recall-compatible API (``/api/v1``), over the same service as the native one.

The provider block names postcall's engine: ``{"postcall": {"language": "en" | "auto",
"model": "<WHISPER_MODEL>", "prompt": "…"}}`` (every option optional). Transcript
statuses map as queued/processing → ``processing``, completed → ``done``, failed →
``failed`` (``sub_code`` = the error code). ``expires_at`` is when the retention
sweeper deletes the transcript with its recording (``POSTCALL_RETENTION_DAYS`` after
the recording was made), null when it is kept until deleted; a deleted one is gone
(404), so ``deleted`` only ever matches nothing in a listing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from postcall import edits, formats
from postcall.api.deps import Svc, Tenant, components, transcription_enabled
from postcall.api.idempotency import idempotent
from postcall.api.middleware import StrictJsonRoute
from postcall.api.schemas import error_responses, iso
from postcall.domain import Transcription, TranscriptionStatus
from postcall.errors import InvalidInput, NotFound, Unsupported
from postcall.languages import normalize_language
from postcall.service import Service
from postcall.transcripts import Transcripts, speaker_mode

PROVIDER = "postcall"
PROVIDER_OPTIONS = ("language", "model", "prompt")

StatusCode = Literal["processing", "done", "failed", "deleted"]
_CODES: dict[TranscriptionStatus, StatusCode] = {
    TranscriptionStatus.QUEUED: "processing",
    TranscriptionStatus.PROCESSING: "processing",
    TranscriptionStatus.COMPLETED: "done",
    TranscriptionStatus.FAILED: "failed",
}

router = APIRouter(
    route_class=StrictJsonRoute,
    prefix="/api/v1",
    tags=["Recall-compatible"],
    dependencies=[Depends(transcription_enabled)],
    responses=error_responses(401, 404, 422, 503),
)


# --- wire shapes ----------------------------------------------------------------------
class Diarization(BaseModel):
    model_config = ConfigDict(extra="forbid")
    use_separate_streams_when_available: bool = Field(
        False,
        description="True: transcribe each participant's own stream when the recording "
        "has them (exact attribution).",
    )


class CreateTranscript(BaseModel):
    """Body of POST /api/v1/recording/{id}/create_transcript/."""

    model_config = ConfigDict(extra="forbid")
    provider: dict[str, Any] = Field(
        default_factory=lambda: {PROVIDER: {}},
        description='The engine and its options: {"postcall": {"language": "en" | "auto", '
        '"model": "…", "prompt": "…"}}.',
    )
    diarization: Diarization = Field(default_factory=Diarization)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RecordingRef(BaseModel):
    id: str
    metadata: dict[str, Any]


class TranscriptStatus(BaseModel):
    code: StatusCode
    sub_code: str | None
    updated_at: str
    queue_position: int | None = Field(
        None,
        description="postcall's addition, while processing: 1 for the next job a worker "
        "takes (null once it runs, or when unknown).",
    )
    eta_seconds: float | None = Field(
        None,
        description="postcall's addition, while processing: about how many seconds until "
        "it is done (null when unknown).",
    )


class TranscriptData(BaseModel):
    download_url: str | None
    provider_data_download_url: None = None


class TranscriptObject(BaseModel):
    id: str
    recording: RecordingRef
    created_at: str
    expires_at: str | None
    status: TranscriptStatus
    data: TranscriptData
    diarization: Diarization | None
    metadata: dict[str, Any]
    provider: dict[str, Any]


class TranscriptList(BaseModel):
    next: str | None
    previous: str | None
    results: list[TranscriptObject]


# --- the provider block ----------------------------------------------------------------
def _model_names(configured: str) -> set[str]:
    return {configured, Path(configured).name}


def parse_provider(provider: Mapping[str, Any], configured_model: str) -> dict[str, str | None]:
    """The options of a provider block; ``Unsupported`` (400) naming what is supported."""
    if list(provider) != [PROVIDER]:
        names = ", ".join(repr(p) for p in provider) or "none"
        raise Unsupported(
            f"provider {names} is not supported: this server's provider is {PROVIDER!r}, "
            f'e.g. {{"{PROVIDER}": {{"language": "en"}}}}',
            field="provider",
            code="unsupported_provider",
        )
    options = provider[PROVIDER]
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise Unsupported(
            f"provider.{PROVIDER} must be an object with any of: {', '.join(PROVIDER_OPTIONS)}",
            field=f"provider.{PROVIDER}",
            code="unsupported_option",
        )
    unknown = [k for k in options if k not in PROVIDER_OPTIONS]
    if unknown:
        raise Unsupported(
            f"provider.{PROVIDER} option {', '.join(map(repr, unknown))} is not supported; "
            f"supported options: {', '.join(PROVIDER_OPTIONS)}",
            field=f"provider.{PROVIDER}.{unknown[0]}",
            code="unsupported_option",
        )
    for name, value in options.items():
        if value is not None and not isinstance(value, str):
            raise Unsupported(
                f"provider.{PROVIDER}.{name} must be a string",
                field=f"provider.{PROVIDER}.{name}",
                code="unsupported_option",
            )
    language, model, prompt = (options.get(k) for k in PROVIDER_OPTIONS)
    if language is not None:
        try:
            normalize_language(language, None)
        except ValueError as exc:
            raise Unsupported(
                str(exc), field=f"provider.{PROVIDER}.language", code="unsupported_language"
            ) from None
    if model is not None and model not in _model_names(configured_model):
        raise Unsupported(
            f"model {model!r} is not available: this server runs "
            f"{Path(configured_model).name!r} (WHISPER_MODEL); leave 'model' out or name it",
            field=f"provider.{PROVIDER}.model",
            code="unsupported_model",
        )
    return {"language": language, "model": model, "prompt": prompt}


# --- the transcript object --------------------------------------------------------------
def transcript_object(
    t: Transcription,
    recording_metadata: Mapping[str, Any],
    download_url: str | None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    requested = t.options.requested
    provider = requested.get("provider") or {
        PROVIDER: {"language": t.options.language or "auto", "prompt": t.options.prompt}
    }
    diarization = requested.get("diarization") or {
        "use_separate_streams_when_available": t.options.speakers.value == "separate_streams"
    }
    return {
        "id": t.id,
        "recording": {"id": t.recording_id, "metadata": dict(recording_metadata)},
        "created_at": iso(t.created_at),
        "expires_at": iso(expires_at) if expires_at is not None else None,
        "status": {
            "code": _CODES[t.status],
            "sub_code": t.error.code if t.error else None,
            "updated_at": iso(t.updated_at),
        },
        "data": {"download_url": download_url, "provider_data_download_url": None},
        "diarization": diarization,
        "metadata": dict(t.metadata),
        "provider": provider,
    }


def _base_url(request: Request) -> str:
    return components(request).settings.public_url or str(request.base_url)


_Facts = tuple[Mapping[str, Any], datetime | None]
"""What a transcript object shows of its recording: metadata, and when it expires."""


def _render(request: Request, t: Transcription, facts: _Facts) -> dict[str, Any]:
    transcripts: Transcripts = components(request).transcripts
    link = transcripts.download_link(t, _base_url(request))
    body = transcript_object(t, facts[0], link.url if link else None, facts[1])
    return _with_standing(body, transcripts.service, t)


def _with_standing(body: dict[str, Any], svc: Service, t: Transcription) -> dict[str, Any]:
    """Recall's "processing" status, with where it stands in postcall's queue."""
    if not t.status.terminal:
        standing = edits.standings(svc, [t]).get(t.id)
        body["status"]["queue_position"] = standing.queue_position if standing else None
        body["status"]["eta_seconds"] = standing.eta_seconds if standing else None
    return body


def _recording_facts(svc: Service, tenant: str, recording_id: str) -> _Facts:
    try:
        recording = svc.get_recording(tenant, recording_id)
    except NotFound:  # deleted meanwhile
        return {}, None
    return dict(recording.metadata), svc.expires_at(recording)


def _request(svc: Service, *args: Any, **kwargs: Any) -> Transcription:
    """``request_transcription``, with a refused language named as this API names it."""
    try:
        return svc.request_transcription(*args, **kwargs)
    except InvalidInput as exc:
        if exc.field == "language":
            exc.field = f"provider.{PROVIDER}.language"
        raise


# --- routes --------------------------------------------------------------------------------
@router.post(
    "/recording/{recording_id}/create_transcript/",
    response_model=TranscriptObject,
    responses=error_responses(400, 409),
)
async def create_transcript(
    recording_id: str, body: CreateTranscript, request: Request, tenant: Tenant, svc: Svc
) -> Response:
    """Transcribe a recording; poll ``GET /api/v1/transcript/{id}/`` until ``done``.

    A recording has at most POSTCALL_MAX_TRANSCRIPTS_PER_RECORDING (10) transcripts;
    the next is refused with 409 ``transcript_limit`` until one is deleted.
    """
    options = parse_provider(body.provider, components(request).settings.whisper_model)
    use_streams = body.diarization.use_separate_streams_when_available

    def create() -> dict[str, Any]:
        recording = svc.get_recording(tenant, recording_id)
        t = _request(
            svc,
            tenant,
            recording_id,
            language=options["language"],
            speakers=speaker_mode(recording, use_streams),
            prompt=options["prompt"],
            metadata=body.metadata,
            requested={
                "provider": body.provider,
                "diarization": body.diarization.model_dump(),
            },
            recording=recording,
        )
        created = transcript_object(t, recording.metadata, None, svc.expires_at(recording))
        return _with_standing(created, svc, t)

    async def run() -> Response:
        return JSONResponse(await run_in_threadpool(create))

    return await idempotent(request, tenant, run)


@router.get("/transcript/{transcript_id}/", response_model=TranscriptObject)
def get_transcript(transcript_id: str, request: Request, tenant: Tenant, svc: Svc) -> Any:
    """The transcript object; once ``done``, ``data.download_url`` links to its words."""
    t = svc.get_transcription(tenant, transcript_id)
    return _render(request, t, _recording_facts(svc, tenant, t.recording_id))


@router.delete("/transcript/{transcript_id}/", status_code=204)
def delete_transcript(transcript_id: str, tenant: Tenant, svc: Svc) -> Response:
    """Delete a transcript and its stored files; its place on the recording is free."""
    svc.delete_transcription(tenant, transcript_id)
    return Response(status_code=204)


@router.get("/transcript/", response_model=TranscriptList)
def list_transcripts(
    request: Request,
    tenant: Tenant,
    svc: Svc,
    recording_id: str | None = None,
    status_code: Annotated[StatusCode | None, Query()] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """Transcripts, newest first; ``next`` is the URL of the following page."""
    transcripts: Transcripts = components(request).transcripts
    statuses = None
    if status_code is not None:
        statuses = [s for s, code in _CODES.items() if code == status_code]
    page = transcripts.list(
        tenant, recording_id=recording_id, statuses=statuses, limit=limit, cursor=cursor
    )
    facts: dict[str, _Facts] = {}
    results = []
    for t in page.items:
        if t.recording_id not in facts:
            facts[t.recording_id] = _recording_facts(svc, tenant, t.recording_id)
        results.append(_render(request, t, facts[t.recording_id]))
    nxt = None
    if page.next_cursor is not None:
        query = urlencode({**request.query_params, "cursor": page.next_cursor})
        nxt = f"{_base_url(request).rstrip('/')}{request.url.path}?{query}"
    return {"next": nxt, "previous": None, "results": results}


@router.get(
    "/transcript/{transcript_id}/download/",
    responses={
        200: {"content": {"application/json": {"schema": {"type": "array"}}}},
        **error_responses(403),
    },
    response_class=Response,
)
def download_transcript(
    transcript_id: str,
    request: Request,
    token: Annotated[str, Query(description="The signed token of a download_url.")],
) -> Response:
    """A transcript's words in the Recall download shape, through a signed link (no API
    key: the link is the credential until it expires)."""
    transcripts: Transcripts = components(request).transcripts
    body = transcripts.open_link(transcript_id, token)
    return Response(
        body,
        media_type=formats.FORMATS["recall"],
        headers={"Cache-Control": "private, no-store"},
    )
