"""Wire shapes of the native API (camelCase, as the documented contract)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from postcall.domain import Recording, SpeakerMode, Transcription, TranscriptionStatus
from postcall.edits import Standing


def iso(dt: Any) -> str:
    return str(dt.isoformat().replace("+00:00", "Z"))


def seconds_str(value: float) -> str:
    """Durations as the contract's strings: '142.5', '11.0', '5.125'."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


class SpeakerOptions(BaseModel):
    """Where speaker attribution comes from."""

    model_config = ConfigDict(extra="forbid")
    mode: SpeakerMode = Field(
        SpeakerMode.AUTO,
        description="auto: separate streams when the recording has them, else its speaker "
        "timeline, else none. diarize: tell voices apart offline.",
    )
    num_speakers: int | None = Field(None, ge=1, le=32, description="Exact count (diarize).")
    min_speakers: int | None = Field(None, ge=1, le=32, description="At least (diarize).")
    max_speakers: int | None = Field(None, ge=1, le=32, description="At most (diarize).")


class TranscribeRequest(BaseModel):
    """Body of POST /v1/recordings/{id}/transcribe (all optional)."""

    model_config = ConfigDict(extra="forbid")
    language: str | None = Field(
        None, description="Language code, or 'auto' to detect; default STT_LANGUAGE."
    )
    speakers: SpeakerOptions | None = None
    prompt: str | None = Field(
        None,
        max_length=2000,
        description="Initial prompt for the model: names and terms it should expect.",
    )
    enroll_voiceprints: bool = Field(
        False,
        description="Separate streams only: save (or refine) a voiceprint of each named "
        "participant from their own stream's speech (embeddings, never audio).",
    )
    match_voiceprints: bool = Field(
        True,
        description="Diarize only: name the speakers whose voice matches one of your "
        "voiceprints (restricted to the recording's participants when it names any).",
    )


class RegisterRecording(BaseModel):
    """Body of POST /v1/recordings registering media already in the bucket."""

    model_config = ConfigDict(extra="forbid")
    object_key: str = Field(min_length=1, max_length=1024)
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class ImportRecording(BaseModel):
    """Body of POST /v1/recordings importing a recording from a URL."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=4096)
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class TranscribeAccepted(BaseModel):
    transcriptionId: str
    status: Literal["queued"] = "queued"


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorDetail(BaseModel):
    """An API error: a stable ``code`` and a message saying what to do."""

    code: str
    message: str
    field: str | None = None
    retryable: bool | None = None


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "field"?}}``."""

    error: ErrorDetail


_ERROR_MEANING = {
    400: "Bad request (an unsupported provider, option or model; an empty file)",
    401: "Missing or invalid API key",
    403: "The signed link is expired or was tampered with",
    404: "Not found (or another tenant's), or the endpoint is disabled",
    409: "Conflict: the id is taken, the transcript is not ready, the recording has its "
    "most transcripts, or a request with this Idempotency-Key is still running",
    413: "The upload is larger than the limit",
    415: "The media is not a format postcall can read",
    416: "The Range asks for bytes past the end of the media",
    422: "Invalid input, media that cannot be transcribed, or an Idempotency-Key reused "
    "with another request",
    503: "A backend (store or blob store) does not answer; retry after Retry-After "
    "seconds (the error says retryable: true)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring postcall's error answers with these statuses."""
    return {s: {"model": ErrorResponse, "description": _ERROR_MEANING[s]} for s in statuses}


class VoiceprintNoteView(BaseModel):
    """What a job did with one participant's voiceprint."""

    participantId: str
    outcome: Literal["enrolled", "updated", "skipped", "matched"]
    message: str
    voiceprintId: str | None = None
    similarity: float | None = None


class TranscriptionView(BaseModel):
    """GET /v1/transcriptions/{id}. Only the fields of the current status are present."""

    model_config = ConfigDict(extra="allow")
    transcriptionId: str
    status: TranscriptionStatus
    recordingId: str
    createdAt: str
    updatedAt: str
    progress: float | None = None
    language: str | None = None
    duration: str | None = None
    segmentCount: str | None = None
    text: str | None = None
    error: ErrorBody | None = None
    queuePosition: int | None = Field(
        None,
        description="While queued or processing: 1 for the next job a worker takes; null "
        "while processing (or when unknown).",
    )
    etaSeconds: float | None = Field(
        None,
        description="While queued or processing: about how many seconds until it is done, "
        "from the queue and the speed of recent jobs; null when unknown.",
    )
    voiceprints: list[VoiceprintNoteView] | None = Field(
        None,
        description="Once completed: what the job did with voiceprints (enrolled, "
        "updated, skipped and why, or matched), when it did anything.",
    )


def transcription_view(
    t: Transcription, text: str | None = None, *, standing: Standing | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transcriptionId": t.id,
        "status": t.status.value,
        "recordingId": t.recording_id,
        "createdAt": iso(t.created_at),
        "updatedAt": iso(t.updated_at),
    }
    if t.status in (TranscriptionStatus.QUEUED, TranscriptionStatus.PROCESSING):
        body["progress"] = round(t.progress, 4)
        body["queuePosition"] = None if standing is None else standing.queue_position
        body["etaSeconds"] = None if standing is None else standing.eta_seconds
    if t.status is TranscriptionStatus.COMPLETED and t.result is not None:
        body["language"] = t.result.language
        body["duration"] = seconds_str(t.result.duration)
        body["segmentCount"] = str(t.result.segment_count)
        if text is not None:
            body["text"] = text
        if t.result.voiceprints:
            body["voiceprints"] = [
                {
                    "participantId": n.participant_id,
                    "outcome": n.outcome,
                    "message": n.message,
                    "voiceprintId": n.voiceprint_id,
                    "similarity": n.similarity,
                }
                for n in t.result.voiceprints
            ]
    if t.status is TranscriptionStatus.FAILED and t.error is not None:
        body["error"] = {"code": t.error.code, "message": t.error.message}
    return body


def recording_view(r: Recording) -> dict[str, Any]:
    return {
        "id": r.id,
        "createdAt": iso(r.created_at),
        "filename": r.filename,
        "contentType": r.content_type,
        "size": r.size,
        "format": r.media.format,
        "duration": seconds_str(r.media.duration),
        "channels": r.media.channels,
        "audioStreams": [
            {
                "index": s.index,
                "codec": s.codec,
                "channels": s.channels,
                "sampleRate": s.sample_rate,
                "duration": None if s.duration is None else seconds_str(s.duration),
            }
            for s in r.media.streams
        ],
        "metadata": dict(r.metadata),
        "tracks": [
            {
                "participantId": t.participant_id,
                "offset": t.offset,
                "duration": seconds_str(t.duration),
            }
            for t in r.tracks
        ],
    }
