"""The store port: records AND the queue.

The store is the source of truth. A transcription *is* its job: creating one in
``queued`` state enqueues it; a worker ``claim``s it under a lease, renews the lease
with ``heartbeat`` (which also records progress), and ends it with ``complete`` or
``fail``. Those three are fenced by the lease owner: a worker that lost its lease
gets ``False`` back and its late result is dropped. A job whose lease expired is
claimable again; after ``max_attempts`` claims it fails with ``worker_lost``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from postcall.domain import (
    ApiKey,
    MediaInfo,
    Recording,
    SpeakerMode,
    Track,
    Transcription,
    TranscriptionError,
    TranscriptionOptions,
    TranscriptionResult,
    TranscriptionStatus,
    VoiceprintNote,
)
from postcall.metadata import renderable, renderable_object
from postcall.store.edits import EditStore
from postcall.store.idempotency import IdempotencyStore
from postcall.store.retention import RetentionStore
from postcall.store.units import UnitStore
from postcall.store.voiceprints import VoiceprintStore
from postcall.store.webhooks_base import WebhookStore

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None


class Store(
    WebhookStore,
    IdempotencyStore,
    UnitStore,
    RetentionStore,
    EditStore,
    VoiceprintStore,
    Protocol,
):
    """Records (recordings, transcriptions, API keys, idempotency keys), the job queue
    with its chunk units, the webhook outbox, what has outlived its retention, edits
    and queue facts (``postcall.store.edits``), and voiceprints
    (``postcall.store.voiceprints``)."""

    # --- recordings ---------------------------------------------------------
    def add_recording(self, recording: Recording) -> None:
        """Insert a recording; ``Conflict`` if the tenant already has that id."""

    def get_recording(self, tenant: str, recording_id: str) -> Recording:
        """The recording, or ``NotFound``."""
        ...

    def list_recordings(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Recording]:
        """Newest first."""
        ...

    def delete_recording(
        self, tenant: str, recording_id: str
    ) -> tuple[Recording, list[Transcription]]:
        """Delete a recording and its transcriptions; return them (for blob clean-up)."""
        ...

    # --- transcriptions -----------------------------------------------------
    def add_transcription(self, transcription: Transcription, *, limit: int | None = None) -> None:
        """Insert a transcription in ``queued`` state: this enqueues it.

        With ``limit``, atomically refuse (``LimitReached``) when the recording already
        has that many transcriptions; ``NotFound`` when the recording does not exist.
        """

    def get_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        """The transcription, or ``NotFound``."""
        ...

    def list_transcriptions(
        self, tenant: str, *, recording_id: str | None, limit: int, cursor: str | None
    ) -> Page[Transcription]:
        """Newest first, optionally only those of one recording."""
        ...

    def delete_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        """Delete a transcription (any state) and its chunk results; return it."""
        ...

    # --- the queue ------------------------------------------------------------
    def claim(self, worker_id: str, *, lease_s: float, max_attempts: int) -> Transcription | None:
        """Take the oldest claimable job under a lease, or None when there is none.

        A job is claimable when queued, or when processing under an expired lease.
        An expired job that already had ``max_attempts`` claims fails with
        ``worker_lost`` instead of being claimed again.
        """
        ...

    def heartbeat(
        self, transcription_id: str, worker_id: str, *, progress: float, lease_s: float
    ) -> bool:
        """Renew the lease and record progress; False when the worker no longer owns it."""
        ...

    def complete(self, transcription_id: str, worker_id: str, result: TranscriptionResult) -> bool:
        """Mark completed; False (and no change) unless ``worker_id`` holds the lease."""
        ...

    def fail(self, transcription_id: str, worker_id: str, error: TranscriptionError) -> bool:
        """Mark failed; False (and no change) unless ``worker_id`` holds the lease."""
        ...

    def release(self, transcription_id: str, worker_id: str) -> bool:
        """Give a claimed job back to the queue without counting the attempt."""
        ...

    def reconcile(self) -> int:
        """Re-enqueue queued jobs that lost their queue entry; return how many.

        A no-op where the records are the queue (SQLite); for a separate queue
        (a Redis Stream) it restores pointers lost with a restart.
        """
        ...

    def queue_depth(self) -> int:
        """How many jobs wait to be claimed."""
        ...

    # --- per-chunk results (so a job run again resumes) ----------------------
    def save_chunk(self, transcription_id: str, index: int, payload: str) -> None:
        """Keep one finished chunk's result (idempotent: the same index overwrites)."""

    def load_chunks(self, transcription_id: str) -> dict[int, str]:
        """All kept chunk results of a transcription, by chunk index."""
        ...

    # --- API keys ---------------------------------------------------------------
    def add_api_key(self, key_hash: str, *, name: str, tenant: str) -> None:
        """Keep an API key's hash (never the key)."""

    def tenant_for_key(self, key_hash: str) -> str | None:
        """The tenant of a stored key hash, or None."""
        ...

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        """The stored key with this hash, or None (revoked or never created)."""
        ...

    def list_api_keys(self) -> list[ApiKey]:
        """Every stored key, oldest first."""
        ...

    def touch_api_key(self, key_hash: str) -> None:
        """Record that the key was used now (nothing if it no longer exists)."""

    def delete_api_key(self, key_hash: str) -> bool:
        """Revoke a key: True when it existed. Every process sees it at once (keys are
        looked up on each request, never cached)."""
        ...

    def close(self) -> None:
        """Release connections."""


# --- codecs shared by the backends -----------------------------------------------


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def media_to_json(recording: Recording) -> str:
    """A recording's media description and tracks, as one JSON field."""
    return json.dumps({**asdict(recording.media), "tracks": [asdict(t) for t in recording.tracks]})


def media_from_json(raw: str) -> tuple[MediaInfo, tuple[Track, ...]]:
    data = json.loads(raw)
    return MediaInfo.from_dict(data), tuple(Track(**t) for t in data.get("tracks", ()))


def options_to_json(options: TranscriptionOptions) -> str:
    return json.dumps(asdict(options))


def options_from_json(raw: str) -> TranscriptionOptions:
    data = json.loads(raw)
    data["speakers"] = SpeakerMode(data.get("speakers", SpeakerMode.AUTO))
    if isinstance(data.get("requested"), dict):  # echoed back: must render
        data["requested"] = renderable_object(data["requested"])
    return TranscriptionOptions(**data)


def result_to_json(result: TranscriptionResult | None) -> str | None:
    return None if result is None else json.dumps(asdict(result))


def result_from_json(raw: str | None) -> TranscriptionResult | None:
    if not raw:
        return None
    data = json.loads(raw)
    data["voiceprints"] = tuple(VoiceprintNote(**n) for n in data.get("voiceprints", ()))
    return TranscriptionResult(**data)


def transcription_from_row(row: Mapping[str, Any]) -> Transcription:
    """Build a Transcription from a backend's flat record (SQL row or Redis hash)."""
    error = None
    if row.get("error_code"):
        error = TranscriptionError(code=str(row["error_code"]), message=str(row["error_message"]))
    return Transcription(
        id=str(row["id"]),
        recording_id=str(row["recording_id"]),
        tenant=str(row["tenant"]),
        status=TranscriptionStatus(row["status"]),
        options=options_from_json(str(row["options"])),
        created_at=ts_to_dt(float(row["created_at"])),
        updated_at=ts_to_dt(float(row["updated_at"])),
        progress=float(row["progress"]),
        attempts=int(row["attempts"]),
        result=result_from_json(row.get("result")),
        error=error,
        metadata=renderable(str(row.get("metadata") or "{}")),
    )


def recording_from_row(row: Mapping[str, Any]) -> Recording:
    media, tracks = media_from_json(str(row["media"]))
    return Recording(
        id=str(row["id"]),
        tenant=str(row["tenant"]),
        created_at=ts_to_dt(float(row["created_at"])),
        media_key=str(row["media_key"]),
        filename=str(row["filename"]),
        content_type=str(row["content_type"]),
        size=int(row["size"]),
        media=media,
        metadata=renderable(str(row["metadata"])),
        tracks=tracks,
    )


def api_key_from_row(row: Mapping[str, Any]) -> ApiKey:
    """Build an ApiKey from a backend's flat record (SQL row or Redis hash)."""
    used = row.get("last_used_at")
    return ApiKey(
        key_hash=str(row["key_hash"]),
        name=str(row["name"]),
        tenant=str(row["tenant"]),
        created_at=ts_to_dt(float(row["created_at"])),
        last_used_at=ts_to_dt(float(used)) if used not in (None, "") else None,
    )


def limit_message(recording_id: str, limit: int) -> str:
    return (
        f"recording {recording_id!r} already has {limit} transcripts, the most it may have "
        "(POSTCALL_MAX_TRANSCRIPTS_PER_RECORDING): delete one to make room"
    )


def encode_cursor(created_at: float, item_id: str) -> str:
    return f"{created_at!r}:{item_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    from postcall.errors import InvalidInput

    ts, sep, item_id = cursor.partition(":")
    try:
        if not sep:
            raise ValueError(cursor)
        return float(ts), item_id
    except ValueError:
        raise InvalidInput("cursor is not one this server returned", field="cursor") from None
