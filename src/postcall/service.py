"""The use cases, over the ports. Both API styles and the CLI call this; no HTTP here."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import mimetypes
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from postcall import decode_child, formats
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
    participants_from_metadata,
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
    StoreUnavailable,
    Unavailable,
)
from postcall.languages import language_for_model, normalize_language
from postcall.metadata import MAX_METADATA_BYTES, check_metadata
from postcall.mixdown import mix_key
from postcall.queue_eta import QueueFacts
from postcall.retention import Retention
from postcall.speakers.attribution import resolve_mode, with_current_names
from postcall.speakers.embedding import SpeakerEmbedder, load_embedder
from postcall.store.base import Page, Store
from postcall.voiceprint_work import VoiceprintConfig

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
"""Longest initial prompt accepted (Whisper keeps its last 224 tokens anyway)."""

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # fullmatch: "$" would pass a "\n"


@functools.cache
def diarization_available() -> bool:
    """Whether offline diarization can run here (its encoder weights are installed).
    Looked up once: searching the import path on every job request costs more than
    the request's store writes."""
    return importlib.util.find_spec("resemblyzer") is not None


def document_key(transcription_id: str) -> str:
    """Where a transcription's document lives in the blob store (derived, so idempotent)."""
    return f"transcripts/{transcription_id.removeprefix('tr_')}.json"


def rendering_key(transcription_id: str, fmt: str) -> str:
    """Where a rendering of the document is kept for a pre-signed link (S3)."""
    return f"transcripts/{transcription_id.removeprefix('tr_')}.{fmt}.json"


RENDERED_FORMATS = ("recall",)
"""Renderings that may be kept beside a document (deleted with it)."""


def _document_keys(transcription_id: str) -> list[str]:
    """Every file a transcription may have: its document and its renderings."""
    return [document_key(transcription_id)] + [
        rendering_key(transcription_id, fmt) for fmt in RENDERED_FORMATS
    ]


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


class NamedSource(Protocol):
    """A recording's bytes as a reader, with the name and type its origin gives it
    (a file fetched from a URL, say: the service knows nothing of where it comes from)."""

    filename: str
    content_type: str

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left with -1); b"" at the end."""
        ...


@dataclass(frozen=True)
class StoredUpload:
    """An uploaded file written to the blob store and probed, not yet a recording's."""

    key: str
    filename: str
    content_type: str
    size: int
    media: MediaInfo


def _track_count(files: int, tracks: int) -> InvalidInput:
    return InvalidInput(
        f"{files} files but {tracks} tracks: give one track per file", field="tracks"
    )


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
        retention: Retention | None = None,
        model: str = "base",
        english_only: bool = False,
        speaker_model: bool = False,
        voiceprints: VoiceprintConfig | None = None,
        embedder: Callable[[], SpeakerEmbedder] | None = None,
    ) -> None:
        """``model`` is WHISPER_MODEL; ``english_only`` whether it only speaks English
        (``languages.english_only_model``): then any other language is refused at once.
        ``speaker_model``: a speaker model is configured (POSTCALL_SPEAKER_MODEL), so
        diarization runs without the bundled encoder's weights. ``embedder`` loads the
        speaker model voiceprints are enrolled from samples with (default: the bundled
        encoder)."""
        self.store = store
        self.speaker_model = speaker_model
        self.model = model
        self.english_only = english_only
        self.blobs = blobs
        self.retention = retention or Retention()
        self.limits = limits or Limits()
        self.default_language = default_language
        self.max_transcripts_per_recording = max_transcripts_per_recording
        self.on_enqueue = on_enqueue
        self.queue_facts = QueueFacts()
        self.voiceprints = voiceprints or VoiceprintConfig()
        self.load_embedder: Callable[[], SpeakerEmbedder] = embedder or load_embedder

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
        self._new_recording_id(tenant, recording_id)  # a bad or taken id: before storing
        self._check_metadata(metadata)
        if tracks is not None and len(tracks) != len(uploads):
            raise _track_count(len(uploads), len(tracks))
        stored: list[StoredUpload] = []
        try:
            for source, filename, content_type in uploads:
                stored.append(
                    self.store_upload(source, filename=filename, content_type=content_type)
                )
        except BaseException:
            self.discard_uploads(stored)
            raise
        return self.create_recording_from_uploads(
            tenant, stored, tracks=tracks, metadata=metadata, recording_id=recording_id
        )

    def create_recording_from_source(
        self,
        tenant: str,
        open_source: Callable[[], AbstractContextManager[NamedSource]],
        *,
        metadata: Mapping[str, Any] | None = None,
        recording_id: str | None = None,
    ) -> Recording:
        """Store and probe a recording read from a source that is opened only once the
        id and metadata are accepted (an import from a URL: nothing is fetched for a
        request that would be refused). Written once, as it is read; nothing is kept
        when it is refused."""
        self._new_recording_id(tenant, recording_id)
        self._check_metadata(metadata)
        with open_source() as source:
            stored = self.store_upload(
                source,  # type: ignore[arg-type]  # a reader: all store_upload needs
                filename=source.filename,
                content_type=source.content_type,
            )
        return self.create_recording_from_uploads(
            tenant, [stored], tracks=None, metadata=metadata, recording_id=recording_id
        )

    def store_upload(self, source: BinaryIO, *, filename: str, content_type: str) -> StoredUpload:
        """Write one uploaded file to the blob store as it is read, and probe it. The
        file belongs to no recording yet: ``create_recording_from_uploads`` makes one,
        ``discard_uploads`` deletes it. Nothing is kept when it is refused."""
        key = new_key("media")
        written: list[str] = []
        try:
            size, media = self._store_upload(key, source, written)
        except BaseException:
            self._discard(written)
            raise
        return StoredUpload(key, filename, content_type, size, media)

    def discard_uploads(self, uploads: Sequence[StoredUpload]) -> None:
        """Delete files stored by ``store_upload`` that will make no recording."""
        self._discard([u.key for u in uploads])

    def create_recording_from_uploads(
        self,
        tenant: str,
        uploads: Sequence[StoredUpload],
        *,
        tracks: Sequence[Mapping[str, Any]] | None,
        metadata: Mapping[str, Any] | None = None,
        recording_id: str | None = None,
    ) -> Recording:
        """The recording of files stored by ``store_upload`` (see
        ``create_multitrack_recording``); when it is refused, the files are deleted."""
        try:
            if not uploads:
                raise InvalidInput("the 'file' field with the recording is missing", field="file")
            rec_id = self._new_recording_id(tenant, recording_id)
            if tracks is not None and len(tracks) != len(uploads):
                raise _track_count(len(uploads), len(tracks))
            self._check_metadata(metadata)
            media = uploads[0].media
            made: tuple[Track, ...] = ()
            if tracks is not None:
                made = tuple(
                    _track(spec, u.key, u.media.duration)
                    for spec, u in zip(tracks, uploads, strict=True)
                )
                media = replace(
                    media,
                    format="multitrack",
                    duration=max(t.offset + t.duration for t in made),
                    streams=tuple(st for u in uploads for st in u.media.streams),
                )
            self._admit(media, metadata)
            recording = Recording(
                id=rec_id,
                tenant=tenant,
                created_at=utcnow(),
                media_key=uploads[0].key,
                filename=uploads[0].filename,
                content_type=uploads[0].content_type,
                size=sum(u.size for u in uploads),
                media=media,
                metadata=dict(metadata or {}),
                tracks=made,
            )
            self._add_recording(recording)
        except BaseException:
            self.discard_uploads(uploads)
            raise
        log.info("recording %s stored (%d bytes, %.1f s)", rec_id, recording.size, media.duration)
        return recording

    def _store_upload(
        self, key: str, source: BinaryIO, written: list[str]
    ) -> tuple[int, MediaInfo]:
        """Store one upload under ``key`` (added to ``written`` once it is there) and
        probe it."""
        reader = _CappedReader(source, self.limits.max_upload_bytes)
        size = self.blobs.put(key, reader)  # type: ignore[arg-type]
        written.append(key)
        if size == 0:
            raise EmptyFile("the uploaded file is empty (0 bytes)", field="file")
        with self.blobs.local_file(key) as path:
            return size, decode_child.probe(path)

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
            media = decode_child.probe(path)
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
        self._add_recording(recording)
        return recording

    def _add_recording(self, recording: Recording) -> None:
        """Keep the recording, written after its media: the store never holds a recording
        whose media is missing, and a recording the client is told of is stored.

        A store that fails mid-write may or may not have kept it; it is asked once more,
        so that the answer (201, or 503 with the media removed) says what happened.
        """
        try:
            self.store.add_recording(recording)
        except StoreUnavailable:
            if not self._holds(lambda: self.store.get_recording(recording.tenant, recording.id)):
                raise

    @staticmethod
    def _holds(read: Callable[[], Recording | Transcription]) -> bool:
        try:
            read()
        except (NotFound, Unavailable):
            return False
        return True

    def _discard(self, keys: Sequence[str]) -> None:
        """Remove media of a refused upload; one that cannot be removed is logged."""
        for key in keys:
            try:
                self.blobs.delete(key)
            except Exception as exc:
                log.warning("could not remove %s of a refused upload (left behind): %s", key, exc)

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

    def expires_at(self, recording: Recording) -> datetime | None:
        """When the retention sweeper deletes this recording and its transcriptions."""
        return self.retention.expires_at(recording.created_at)

    def release_media_if_done(self, tenant: str, recording_id: str) -> bool:
        """Delete the recording's media when none of its transcriptions waits or runs
        (``POSTCALL_DELETE_MEDIA_AFTER_TRANSCRIPTION``); True when it was deleted.

        Registered objects belong to the client and are left in place.
        """
        recording = self.store.get_recording(tenant, recording_id)
        cursor: str | None = None
        while True:
            page = self.store.list_transcriptions(
                tenant, recording_id=recording_id, limit=100, cursor=cursor
            )
            if any(not t.status.terminal for t in page.items):
                return False
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        keys = {recording.media_key, *(t.media_key for t in recording.tracks)}
        owned = sorted(k for k in keys if is_generated(k))
        self.blobs.delete(mix_key(recording))
        for key in owned:
            self.blobs.delete(key)
        if owned:
            log.info("recording %s: media deleted after its transcription", recording_id)
        return bool(owned)

    def list_recordings(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Recording]:
        return self.store.list_recordings(tenant, limit=limit, cursor=cursor)

    def delete_recording(self, tenant: str, recording_id: str) -> None:
        """Delete a recording, its transcriptions and every stored file of theirs.

        The blob store is asked first, so that while it does not answer the request
        fails (503) with nothing deleted, rather than leaving files no record names.
        """
        self.blobs.exists(self.store.get_recording(tenant, recording_id).media_key)
        recording, transcriptions = self.store.delete_recording(tenant, recording_id)
        keys = [recording.media_key] if is_generated(recording.media_key) else []
        # (registered objects belong to the client and are left in place)
        keys += [t.media_key for t in recording.tracks if is_generated(t.media_key)]
        keys.append(mix_key(recording))  # the player's mix, where one was made
        self._delete_files([*keys, *(k for t in transcriptions for k in _document_keys(t.id))])

    def _delete_files(self, keys: Sequence[str]) -> None:
        """Delete files whose records are gone; one the blob store fails on is logged."""
        for key in keys:
            try:
                self.blobs.delete(key)
            except Unavailable as exc:
                log.warning("could not delete %s (left behind): %s", key, exc)

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
        recording: Recording | None = None,
        enroll_voiceprints: bool = False,
        match_voiceprints: bool = True,
    ) -> Transcription:
        """Queue a transcription of a stored recording (``recording``: the caller has
        just read it from the store; it is not read again).

        ``speakers`` is resolved here against what the recording carries, so a mode the
        recording cannot give is refused at once rather than failing later. A recording
        has at most ``max_transcripts_per_recording`` transcriptions (``LimitReached``).
        ``requested`` is kept to be echoed back (see ``TranscriptionOptions``).
        ``enroll_voiceprints`` needs separate streams and the speaker encoder.
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
        if recording is None or (recording.tenant, recording.id) != (tenant, recording_id):
            recording = self.store.get_recording(tenant, recording_id)
        if self.retention.delete_media_after_transcription and not self.blobs.exists(
            recording.media_key
        ):
            raise Conflict(
                f"the media of recording {recording_id!r} was deleted after its "
                "transcription (POSTCALL_DELETE_MEDIA_AFTER_TRANSCRIPTION); upload it again "
                "to transcribe it again",
                code="media_deleted",
            )
        mode = resolve_mode(
            speakers,
            has_tracks=bool(recording_tracks(recording)),
            has_timeline=bool(timeline_from_metadata(recording.metadata)),
            can_diarize=self.speaker_model or diarization_available(),
        )
        if enroll_voiceprints and mode is not SpeakerMode.SEPARATE_STREAMS:
            raise InvalidInput(
                "enroll_voiceprints needs a recording with separate streams (one file per "
                "participant, or a 'channels' or 'streams' map) transcribed with them",
                field="enroll_voiceprints",
            )
        if enroll_voiceprints and not diarization_available():
            raise InvalidInput(
                "voiceprints need the speaker encoder: install the 'diarize' extra and "
                "'pip install --no-deps resemblyzer==0.1.4'",
                field="enroll_voiceprints",
            )
        options = TranscriptionOptions(
            language=lang,
            speakers=mode,
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            prompt=prompt or None,
            requested=dict(requested or {}),
            enroll_voiceprints=enroll_voiceprints,
            match_voiceprints=match_voiceprints,
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
        try:
            self.store.add_transcription(transcription, limit=self.max_transcripts_per_recording)
        except StoreUnavailable:  # kept or not? asked once more (see _add_recording)
            if not self._holds(lambda: self.store.get_transcription(tenant, transcription.id)):
                raise
        if self.on_enqueue is not None:
            self.on_enqueue()
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
        transcription = self.store.get_transcription(tenant, transcription_id)
        if transcription.result is not None:  # the blob store must answer (see above)
            self.blobs.exists(transcription.result.document_key)
        self.store.delete_transcription(tenant, transcription_id)
        self._delete_files(_document_keys(transcription_id))

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
        """The stored document, its speakers named as the recording's participants are
        now (renamed since: ``speakers.with_current_names``)."""
        assert transcription.result is not None
        raw = self.blobs.get_bytes(transcription.result.document_key)
        try:
            document = formats.document_from_dict(json.loads(raw))
        except (ValueError, KeyError) as exc:
            raise PostcallError(f"stored transcript is unreadable: {exc}") from exc
        try:
            recording = self.store.get_recording(transcription.tenant, transcription.recording_id)
        except NotFound:
            return document
        return with_current_names(document, participants_from_metadata(recording.metadata))
