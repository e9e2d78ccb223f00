"""Native routes behind the console: a recording's audio (with HTTP Range), its
metadata edited, and a failed transcription retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from postcall import edits
from postcall.api import deps
from postcall.api.deps import Svc, Tenant, components
from postcall.api.middleware import v1_routers
from postcall.api.schemas import (
    TranscriptionView,
    error_responses,
    iso,
    recording_view,
    transcription_view,
)
from postcall.errors import NotFound

router, transcriptions = v1_routers()

LINK_TTL_S = 4 * 3600
"""How long a media link stays valid (a signed postcall link, or S3's pre-signed one)."""
MEDIA_LINK = "media"
"""The kind of link token that opens a recording's audio."""


async def media_tenant(
    request: Request,
    recording_id: str,
    token: Annotated[
        str | None,
        Query(description="The token of a media link (instead of an API key: for players)."),
    ] = None,
) -> str:
    """The tenant of the API key, or of a valid media link for this recording."""
    if token is None:
        return await deps.tenant(request)
    target = components(request).transcripts.signer.verify(token, MEDIA_LINK)
    if target.object_id != recording_id:
        raise NotFound(f"recording {recording_id!r} not found")
    return target.tenant


class MediaLink(BaseModel):
    url: str = Field(description="The audio, for anyone holding the link until it expires.")
    expiresAt: str


class RecordingPatch(BaseModel):
    """Body of PATCH /v1/recordings/{id}."""

    model_config = ConfigDict(extra="forbid")
    metadata: dict[str, Any] = Field(
        description="Keys to change in the recording's metadata, validated as on upload "
        '(e.g. {"participants": [{"id": "1", "name": "Alice"}]}); a key set to null is '
        "removed, keys not named are kept."
    )


@router.patch("/recordings/{recording_id}")
def update_recording(
    recording_id: str, body: RecordingPatch, tenant: Tenant, svc: Svc
) -> dict[str, Any]:
    """Change the recording's metadata, e.g. rename a participant: every format of
    its transcripts (txt, srt, vtt, json, recall) then shows the new name."""
    return recording_view(edits.update_metadata(svc, tenant, recording_id, body.metadata))


_AUDIO = {"audio/*": {"schema": {"type": "string", "format": "binary"}}}
_MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The audio", "content": _AUDIO},
    206: {
        "description": "The requested byte range (Range: bytes=…), or ranges "
        "(multipart/byteranges)",
        "content": {**_AUDIO, "multipart/byteranges": {"schema": {"type": "string"}}},
    },
    307: {"description": "S3 blob store: a pre-signed link to the audio"},
    **error_responses(403, 416),
}


class MediaFile(FileResponse):
    """A file answered with Range support, where a Range header that cannot be parsed
    is ignored (RFC 9110: the whole file) and one past the end is postcall's JSON 416."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = next((v for k, v in scope.get("headers", ()) if k == b"range"), None)
        if header is not None and self.stat_result is not None:
            size = self.stat_result.st_size
            try:
                self._parse_range_header(header.decode("latin-1"), size)
            except MalformedRangeHeader:
                headers = [(k, v) for k, v in scope["headers"] if k != b"range"]
                scope = {**scope, "headers": headers}
            except RangeNotSatisfiable:
                refused = JSONResponse(
                    {
                        "error": {
                            "code": "range_not_satisfiable",
                            "message": f"the range is outside the {size} bytes of the media",
                        }
                    },
                    status_code=416,
                    headers={"Content-Range": f"bytes */{size}"},
                )
                await refused(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


@router.get("/recordings/{recording_id}/media_link", response_model=MediaLink)
def recording_media_link(
    recording_id: str, request: Request, tenant: Tenant, svc: Svc
) -> dict[str, str]:
    """A link to the recording's audio that needs no API key, for an audio player
    (``<audio src>`` cannot send one); valid for four hours."""
    svc.get_recording(tenant, recording_id)
    signer = components(request).transcripts.signer
    token = signer.sign(MEDIA_LINK, tenant, recording_id, ttl_s=LINK_TTL_S)
    base = str(request.base_url).rstrip("/")
    query = urlencode({"token": token})
    expires = datetime.now(UTC) + timedelta(seconds=LINK_TTL_S)
    return {
        "url": f"{base}/v1/recordings/{quote(recording_id, safe='')}/media?{query}",
        "expiresAt": iso(expires),
    }


@router.get(
    "/recordings/{recording_id}/media",
    response_class=Response,
    responses=_MEDIA_RESPONSES,
)
def recording_media(
    recording_id: str,
    svc: Svc,
    owner: Annotated[str, Depends(media_tenant)],
) -> Response:
    """The recording's audio for a player, with HTTP Range (206 for a range, 416 past
    the end). A recording of several tracks (or audio streams) is served as one mix
    (Ogg/Opus, made on the first request). With an S3 blob store: a redirect to a
    pre-signed link. Authorised by an API key, or by the ``token`` of a media link."""
    media = edits.playable_media(svc, owner, recording_id)
    url = svc.blobs.presign_get(media.key, LINK_TTL_S)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    with svc.blobs.local_file(media.key) as path:  # the folder's own file: stays after
        return MediaFile(
            path,
            stat_result=path.stat(),
            media_type=media.content_type,
            headers={"Cache-Control": "private, max-age=60"},
        )


@transcriptions.post(
    "/transcriptions/{transcription_id}/retry",
    status_code=202,
    response_model=TranscriptionView,
    response_model_exclude_none=True,
    responses=error_responses(409),
)
def retry_transcription(transcription_id: str, tenant: Tenant, svc: Svc) -> Any:
    """Run a failed transcription again under the same id (409 ``not_failed`` unless it
    failed). Its attempts start over and it takes no other of the recording's places;
    a ``transcript.done`` or ``transcript.failed`` webhook follows as usual."""
    t = edits.retry(svc, tenant, transcription_id)
    view = transcription_view(t, standing=edits.standings(svc, [t]).get(t.id))
    return JSONResponse(view, status_code=202)
