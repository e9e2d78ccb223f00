"""The use cases, over the ports. Both API styles and the CLI call this; no HTTP here."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import mimetypes
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from postcall import audio, formats
from postcall.blobs.base import BlobStore, is_generated, new_key
from postcall.domain import (
    MediaInfo,
    Recording,
    SpeakerMode,
    Track,
    TranscriptDocument,
    Transcription,
    TranscriptionOptions,
    TranscriptionStatus,
    new_id,
    recording_tracks,
    timeline_from_metadata,
    utcnow,
)
from postcall.errors import (
    Conflict,
    DurationExceeded,
    EmptyFile,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PostcallError,
)
from postcall.languages import language_for_model, normalize_language
from postcall.metadata import MAX_METADATA_BYTES, check_metadata
from postcall.speakers import resolve_mode
from postcall.store.base import Page, Store

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
"""Longest initial prompt accepted (Whisper keeps its last 224 tokens anyway)."""

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # fullmatch: "$" would pass a "\n"


def diarization_available() -> bool:
    """Whether offline diarization can run here (its encoder weights are installed)."""
    return importlib.util.find_spec("resemblyzer") is not None


def document_key(transcription_id: str) -> str:
    """Where a transcription's document lives in the blob store (derived, so idempotent)."""
    return f"transcripts/{transcription_id.removeprefix('tr_')}.json"


def rendering_key(transcription_id: str, fmt: str) -> str:
    """Where a rendering of the document is kept for a pre-signed link (S3)."""
    return f"transcripts/{transcription_id.removeprefix('tr_')}.{fmt}.json"


RENDERED_FORMATS = ("recall",)
"""Renderings that may be kept beside a document (deleted with it)."""


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 2 * 1024**3
    max_duration_s: float = 4 * 3600.0
    max_metadata_bytes: int = MAX_METADATA_BYTES


class _CappedReader:
    """Reads through to ``source`` and refuses to go past ``cap`` bytes."""

    def __init__(self, source: BinaryIO, cap: int) -> None:
        self._source = source
        self._cap = cap
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        block = self._source.read(size)
        self.count += len(block)
        if self.count > self._cap:
            raise PayloadTooLarge(f"the upload is larger than the limit of {self._cap} bytes")
        return block


def _track(spec: Mapping[str, Any], key: str, duration: float) -> Track:
    participant = spec.get("participant_id")
    offset = spec.get("offset", 0.0)
    if not isinstance(participant, str | int) or str(participant) == "":
        raise InvalidInput("every track needs a participant_id", field="tracks")
    if not isinstance(offset, int | float) or isinstance(offset, bool) or offset < 0:
        raise InvalidInput("a track's offset must be a number of seconds >= 0", field="tracks")
    return Track(str(participant), key, offset=float(offset), duration=duration)


def validate_metadata(metadata: Mapping[str, Any], media: MediaInfo) -> None:
    """Refuse speaker information that cannot apply to the media (field ``metadata``)."""

    def bad(message: str) -> InvalidInput:
        return InvalidInput(f"metadata: {message}", field="metadata")

    participants = metadata.get("participants")
    if participants is not None and not (
        isinstance(participants, list) and all(isinstance(p, Mapping) for p in participants)
    ):
        raise bad("participants must be a list of objects with id and name")
    for key, limit, what in (
        ("channels", media.channels, "channels"),
        ("streams", len(media.streams), "audio streams"),
    ):
        mapping = metadata.get(key)
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise bad(f"{key} must map a number to a participant id")
        for number in mapping:
            if not str(number).isdigit() or int(number) >= limit:
                raise bad(f"{key} names {number!r}, but the media has {limit} {what}")
    timeline = metadata.get("speaker_timeline")
    if timeline is not None:
        if not isinstance(timeline, list):
            raise bad("speaker_timeline must be a list of {participant_id, start, end}")
        for event in timeline:
            try:
                start, end = float(event["start"]), float(event["end"])
                str(event["participant_id"])
            except (TypeError, KeyError, ValueError):
                raise bad("each speaker_timeline event needs participant_id, start, end") from None
            if not (math.isfinite(start) and math.isfinite(end)):
                raise bad("speaker_timeline times must be finite numbers of seconds")
            if not 0 <= start <= end:
                raise bad(f"speaker_timeline event {start}-{end} has its end before its start")


class Service:
    """Recordings and transcriptions for one tenant at a time."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        *,
        limits: Limits | None = None,
        default_language: str | None = "en",
        on_enqueue: Callable[[], None] | None = None,
        max_transcripts_per_recording: int | None = 10,
        model: str = "base",
        english_only: bool = False,
    ) -> None:
        """``model`` is WHISPER_MODEL; ``english_only`` whether it only speaks English
        (``languages.english_only_model``): then any other language is refused at once."""
        self.store = store
        self.model = model
        self.english_only = english_only
        self.blobs = blobs
        self.limits = limits or Limits()
        self.default_language = default_language
        self.max_transcripts_per_recording = max_transcripts_per_recording
        self._on_enqueue = on_enqueue

    # --- recordings ---------------------------------------------------------------
    def create_recording(
        self,
        tenant: str,
        source: BinaryIO,
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, Any] | None = None,
        recording_id: str | None = None,
    ) -> Recording:
        """Store and probe an uploaded recording; nothing is kept if it is refused."""
        return self.create_multitrack_recording(
            tenant,
            [(source, filename, content_type)],
            tracks=None,
            metadata=metadata,
            recording_id=recording_id,
        )

    def create_multitrack_recording(
        self,
        tenant: str,
        uploads: Sequence[tuple[BinaryIO, str, str]],
        *,
        tracks: Sequence[Mapping[str, Any]] | None,
        metadata: Mapping[str, Any] | None = None,
        recording_id: str | None = None,
    ) -> Recording:
        """Store and probe one file, or one file per participant (``tracks``: for each
        file in order, ``participant_id`` and ``offset`` in seconds on the recording's
        timeline). Nothing is kept if any part is refused."""
        rec_id = self._new_recording_id(tenant, recording_id)
        self._check_metadata(metadata)
        if tracks is not None and len(tracks) != len(uploads):
            raise InvalidInput(
                f"{len(uploads)} files but {len(tracks)} tracks: give one track per file",
                field="tracks",
            )
        keys: list[str] = []
        try:
            stored = []
            for source, _, _ in uploads:
                key = new_key("media")
                keys.append(key)
                stored.append(self._store_upload(key, source))
            media = stored[0][1]
            made: tuple[Track, ...] = ()
            if tracks is not None:
                made = tuple(
                    _track(spec, key, m.duration)
                    for spec, key, (_, m) in zip(tracks, keys, stored, strict=True)
                )
                media = replace(
                    media,
                    format="multitrack",
                    duration=max(t.offset + t.duration for t in made),
                    streams=tuple(st for _, m in stored for st in m.streams),
                )
            self._admit(media, metadata)
            recording = Recording(
                id=rec_id,
                tenant=tenant,
                created_at=utcnow(),
                media_key=keys[0],
                filename=uploads[0][1],
                content_type=uploads[0][2],
                size=sum(size for size, _ in stored),
                media=media,
                metadata=dict(metadata or {}),
                tracks=made,
            )
            self.store.add_recording(recording)
        except BaseException:
            for key in keys:
                self.blobs.delete(key)
            raise
        log.info("recording %s stored (%d bytes, %.1f s)", rec_id, recording.size, media.duration)
        return recording

    def _store_upload(self, key: str, source: BinaryIO) -> tuple[int, MediaInfo]:
        reader = _CappedReader(source, self.limits.max_upload_bytes)
        size = self.blobs.put(key, reader)  # type: ignore[arg-type]
        if size == 0:
            raise EmptyFile("the uploaded file is empty (0 bytes)", field="file")
        with self.blobs.local_file(key) as path:
            return size, audio.probe(path)

    def register_recording(
        self,
        tenant: str,
        object_key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        recording_id: str | None = None,
    ) -> Recording:
        """Register media a client already wrote into the blob store (a meeting bot's bucket).

        The key must lie inside the configured bucket prefix; the object is probed like
        an upload. postcall does not own it: deleting the recording leaves it in place.
        """
        rec_id = self._new_recording_id(tenant, recording_id)
        self._check_metadata(metadata)
        key = self.blobs.resolve_external(object_key)
        with self.blobs.local_file(key) as path:
            size = path.stat().st_size
            if size == 0:
                raise EmptyFile("the object is empty (0 bytes)", field="object_key")
            media = audio.probe(path)
        self._admit(media, metadata)
        recording = Recording(
            id=rec_id,
            tenant=tenant,
            created_at=utcnow(),
            media_key=key,
            filename=object_key.rsplit("/", 1)[-1],
            content_type=mimetypes.guess_type(object_key)[0] or "application/octet-stream",
            size=size,
            media=media,
            metadata=dict(metadata or {}),
        )
        self.store.add_recording(recording)
        return recording

    def _new_recording_id(self, tenant: str, recording_id: str | None) -> str:
        if recording_id is None:
            return new_id("rec")
        if not _CLIENT_ID.fullmatch(recording_id):
            raise InvalidInput(
                "id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
                field="id",
            )
        self._ensure_free(tenant, recording_id)
        return recording_id

    def _admit(self, media: MediaInfo, metadata: Mapping[str, Any] | None) -> None:
        """Refuse media over the duration limit, or speaker metadata it cannot carry."""
        duration = media.duration
        if duration > self.limits.max_duration_s:
            raise DurationExceeded(
                f"the recording lasts {duration:.0f} s, more than the limit of "
                f"{self.limits.max_duration_s:.0f} s (POSTCALL_MAX_DURATION_S)"
            )
        validate_metadata(metadata or {}, media)

    def _check_metadata(self, metadata: Mapping[str, Any] | None) -> None:
        """Refuse metadata that could not be stored and rendered back (422 on its field)."""
        if metadata is not None:
            check_metadata(metadata, max_bytes=self.limits.max_metadata_bytes)

    def _ensure_free(self, tenant: str, recording_id: str) -> None:
        try:
            self.store.get_recording(tenant, recording_id)
        except NotFound:
            return
        raise Conflict(f"recording {recording_id!r} already exists")

    def get_recording(self, tenant: str, recording_id: str) -> Recording:
        return self.store.get_recording(tenant, recording_id)

    def list_recordings(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Recording]:
        return self.store.list_recordings(tenant, limit=limit, cursor=cursor)

    def delete_recording(self, tenant: str, recording_id: str) -> None:
        """Delete a recording, its transcriptions and every stored file of theirs."""
        recording, transcriptions = self.store.delete_recording(tenant, recording_id)
        if is_generated(recording.media_key):  # registered objects belong to the client
            self.blobs.delete(recording.media_key)
        for t in transcriptions:
            self._delete_documents(t.id)

    def _delete_documents(self, transcription_id: str) -> None:
        self.blobs.delete(document_key(transcription_id))
        for fmt in RENDERED_FORMATS:
            self.blobs.delete(rendering_key(transcription_id, fmt))

    # --- transcriptions -----------------------------------------------------------
    def request_transcription(
        self,
        tenant: str,
        recording_id: str,
        *,
        language: str | None = None,
        speakers: SpeakerMode = SpeakerMode.AUTO,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        prompt: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        requested: Mapping[str, Any] | None = None,
    ) -> Transcription:
        """Queue a transcription of a stored recording.

        ``speakers`` is resolved here against what the recording carries, so a mode the
        recording cannot give is refused at once rather than failing later. A recording
        has at most ``max_transcripts_per_recording`` transcriptions (``LimitReached``).
        ``requested`` is kept to be echoed back (see ``TranscriptionOptions``).
        """
        self._check_metadata(metadata)
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(
                f"prompt is {len(prompt)} characters long; at most {MAX_PROMPT_CHARS}",
                field="prompt",
            )
        try:
            lang = normalize_language(language, self.default_language)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="language") from None
        try:
            lang = language_for_model(lang, model=self.model, english_only=self.english_only)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="language", code="unsupported_language") from None
        low, high = min_speakers or 1, max_speakers
        if high is not None and low > high:
            raise InvalidInput(
                f"min_speakers ({low}) is more than max_speakers ({high})", field="speakers"
            )
        if num_speakers is not None and not low <= num_speakers <= (high or num_speakers):
            raise InvalidInput(
                f"num_speakers ({num_speakers}) is outside min_speakers..max_speakers",
                field="speakers",
            )
        recording = self.store.get_recording(tenant, recording_id)
        mode = resolve_mode(
            speakers,
            has_tracks=bool(recording_tracks(recording)),
            has_timeline=bool(timeline_from_metadata(recording.metadata)),
            can_diarize=diarization_available(),
        )
        options = TranscriptionOptions(
            language=lang,
            speakers=mode,
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            prompt=prompt or None,
            requested=dict(requested or {}),
        )
        now = utcnow()
        transcription = Transcription(
            id=new_id("tr"),
            recording_id=recording_id,
            tenant=tenant,
            status=TranscriptionStatus.QUEUED,
            options=options,
            created_at=now,
            updated_at=now,
            metadata=dict(metadata or {}),
        )
        self.store.add_transcription(transcription, limit=self.max_transcripts_per_recording)
        if self._on_enqueue is not None:
            self._on_enqueue()
        return transcription

    def get_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        return self.store.get_transcription(tenant, transcription_id)

    def list_transcriptions(
        self, tenant: str, *, recording_id: str | None, limit: int, cursor: str | None
    ) -> Page[Transcription]:
        if recording_id is not None:
            self.store.get_recording(tenant, recording_id)
        return self.store.list_transcriptions(
            tenant, recording_id=recording_id, limit=limit, cursor=cursor
        )

    def delete_transcription(self, tenant: str, transcription_id: str) -> None:
        self.store.delete_transcription(tenant, transcription_id)
        self._delete_documents(transcription_id)

    def get_document(self, tenant: str, transcription_id: str) -> TranscriptDocument:
        """The finished transcript; ``Conflict`` (code ``not_ready``) before it exists."""
        transcription = self.store.get_transcription(tenant, transcription_id)
        if transcription.status is not TranscriptionStatus.COMPLETED:
            raise Conflict(
                f"transcription {transcription_id!r} is {transcription.status.value}; the "
                "transcript exists once its status is completed",
                code="not_ready",
            )
        return self.load_document(transcription)

    def load_document(self, transcription: Transcription) -> TranscriptDocument:
        assert transcription.result is not None
        raw = self.blobs.get_bytes(transcription.result.document_key)
        try:
            return formats.document_from_dict(json.loads(raw))
        except (ValueError, KeyError) as exc:
            raise PostcallError(f"stored transcript is unreadable: {exc}") from exc
