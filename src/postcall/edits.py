"""Use cases behind the console: edit a recording's metadata, retry a failed
transcription, where a transcription stands in the queue, and the audio to play.

Functions over ``Service`` (its ports and limits); no HTTP here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from postcall import queue_eta
from postcall.domain import Recording, Track, Transcription, TranscriptionStatus
from postcall.errors import Conflict, NotFound
from postcall.metadata import check_metadata
from postcall.mixdown import mix_key, write_mix
from postcall.service import RENDERED_FORMATS, Service, rendering_key, validate_metadata

log = logging.getLogger(__name__)


def update_metadata(
    svc: Service, tenant: str, recording_id: str, changes: Mapping[str, Any]
) -> Recording:
    """Merge ``changes`` into the recording's metadata (a key set to None is removed),
    validated as on upload; renderings kept for links are dropped, so every format
    shows the new names."""
    recording = svc.store.get_recording(tenant, recording_id)
    merged = dict(recording.metadata)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    check_metadata(merged, max_bytes=svc.limits.max_metadata_bytes)
    validate_metadata(merged, recording.media)
    updated = svc.store.update_recording_metadata(tenant, recording_id, merged)
    stale = [
        rendering_key(t.id, fmt)
        for t in _all_transcriptions(svc, tenant, recording_id)
        for fmt in RENDERED_FORMATS
    ]
    for key in stale:
        try:
            svc.blobs.delete(key)
        except Exception as exc:  # a stale rendering left behind is logged, not fatal
            log.warning("could not drop the rendering %s: %s", key, exc)
    return updated


def _all_transcriptions(svc: Service, tenant: str, recording_id: str) -> list[Transcription]:
    found: list[Transcription] = []
    cursor: str | None = None
    while True:
        page = svc.store.list_transcriptions(
            tenant, recording_id=recording_id, limit=100, cursor=cursor
        )
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def retry(svc: Service, tenant: str, transcription_id: str) -> Transcription:
    """Queue a failed transcription again under its id (``Conflict`` ``not_failed``
    otherwise; ``media_deleted`` when its media is gone)."""
    t = svc.store.get_transcription(tenant, transcription_id)
    if t.status is TranscriptionStatus.FAILED:
        recording = svc.store.get_recording(tenant, t.recording_id)
        if not svc.blobs.exists(recording.media_key):
            raise Conflict(
                f"the media of recording {recording.id!r} is gone (deleted after its "
                "transcription): upload it again to transcribe it",
                code="media_deleted",
            )
    retried = svc.store.retry_transcription(tenant, transcription_id)
    if svc.on_enqueue is not None:
        svc.on_enqueue()
    return retried


@dataclass(frozen=True)
class Standing:
    """A live transcription's place in the queue (None when it is not queued) and the
    seconds until it is done (None when unknown)."""

    queue_position: int | None
    eta_seconds: float | None


def standings(svc: Service, transcriptions: Sequence[Transcription]) -> dict[str, Standing]:
    """The standing of each queued or running transcription among ``transcriptions``."""
    live = [t for t in transcriptions if not t.status.terminal]
    if not live:
        return {}
    facts = svc.queue_facts
    speed, processing = facts.pace(svc.store.recent_runs, svc.store.processing_count)
    out: dict[str, Standing] = {}
    for t in live:
        where = (t.tenant, t.recording_id)
        try:
            duration = facts.length(where, functools.partial(_length, svc, where))
        except NotFound:
            continue
        if t.status is TranscriptionStatus.QUEUED:
            position = svc.store.queue_position(t.id)
            eta = (
                None
                if position is None
                else queue_eta.eta_queued(speed, duration, position, processing)
            )
            out[t.id] = Standing(position, _seconds(eta))
        else:
            eta = queue_eta.eta_processing(speed, duration, t.progress)
            out[t.id] = Standing(None, _seconds(eta))
    return out


def _length(svc: Service, where: tuple[str, str]) -> float:
    return svc.store.get_recording(*where).media.duration


def _seconds(eta: float | None) -> float | None:
    return None if eta is None else round(eta, 1)


@dataclass(frozen=True)
class Media:
    """The audio to play: a blob key and its media type."""

    key: str
    content_type: str


def playable_media(svc: Service, tenant: str, recording_id: str) -> Media:
    """The recording's audio for a player: its own file, or for several tracks (or
    streams) a mixed rendition, made on first request and kept beside the media."""
    recording = svc.store.get_recording(tenant, recording_id)
    sources = mixed_sources(recording)
    if not sources:
        if not svc.blobs.exists(recording.media_key):
            raise _gone(recording_id)
        return Media(recording.media_key, _content_type(recording))
    key = mix_key(recording)
    if not svc.blobs.exists(key):
        if not all(svc.blobs.exists(s.media_key) for s in sources):
            raise _gone(recording_id)
        write_mix(svc.blobs, key, sources, recording.media.duration)
    return Media(key, "audio/ogg")


def mixed_sources(recording: Recording) -> list[Track]:
    """The tracks a player needs mixed: separate files, or several audio streams."""
    if recording.tracks:
        return list(recording.tracks)
    streams = recording.media.streams
    if len(streams) > 1:
        return [
            Track(f"stream-{s.index}", recording.media_key, stream_index=s.index) for s in streams
        ]
    return []


def _gone(recording_id: str) -> NotFound:
    return NotFound(
        f"the media of recording {recording_id!r} is no longer kept (deleted after its "
        "transcription)",
        code="media_deleted",
    )


_BY_FORMAT = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "matroska,webm": "audio/webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4",
    "aac": "audio/aac",
}


def _content_type(recording: Recording) -> str:
    """What the probe found, before what the client said (a FLAC named .wav is FLAC)."""
    probed = _BY_FORMAT.get(recording.media.format)
    if probed is not None:
        return probed
    given = recording.content_type.split(";", 1)[0].strip().lower()
    return given if given.startswith(("audio/", "video/")) else "application/octet-stream"
