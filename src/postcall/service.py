"""The use cases, over the ports. Both API styles and the CLI call this; no HTTP here."""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from postcall import audio, formats
from postcall.blobs.base import BlobStore, is_generated, new_key
from postcall.domain import (
    Recording,
    TranscriptDocument,
    Transcription,
    TranscriptionOptions,
    TranscriptionStatus,
    new_id,
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
from postcall.languages import normalize_language
from postcall.store.base import Page, Store

log = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def document_key(transcription_id: str) -> str:
    """Where a transcription's document lives in the blob store (derived, so idempotent)."""
    return f"transcripts/{transcription_id.removeprefix('tr_')}.json"


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 2 * 1024**3
    max_duration_s: float = 4 * 3600.0


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
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits or Limits()
        self.default_language = default_language
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
        rec_id = self._new_recording_id(tenant, recording_id)
        key = new_key("media")
        reader = _CappedReader(source, self.limits.max_upload_bytes)
        try:
            size = self.blobs.put(key, reader)  # type: ignore[arg-type]
            if size == 0:
                raise EmptyFile("the uploaded file is empty (0 bytes)", field="file")
            with self.blobs.local_file(key) as path:
                media = audio.probe(path)
            self._check_duration(media.duration)
            recording = Recording(
                id=rec_id,
                tenant=tenant,
                created_at=utcnow(),
                media_key=key,
                filename=filename,
                content_type=content_type,
                size=size,
                media=media,
                metadata=dict(metadata or {}),
            )
            self.store.add_recording(recording)
        except BaseException:
            self.blobs.delete(key)
            raise
        log.info("recording %s stored (%d bytes, %.1f s)", rec_id, size, media.duration)
        return recording

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
        key = self.blobs.resolve_external(object_key)
        with self.blobs.local_file(key) as path:
            size = path.stat().st_size
            if size == 0:
                raise EmptyFile("the object is empty (0 bytes)", field="object_key")
            media = audio.probe(path)
        self._check_duration(media.duration)
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
        if not _CLIENT_ID.match(recording_id):
            raise InvalidInput(
                "id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
                field="id",
            )
        self._ensure_free(tenant, recording_id)
        return recording_id

    def _check_duration(self, duration: float) -> None:
        if duration > self.limits.max_duration_s:
            raise DurationExceeded(
                f"the recording lasts {duration:.0f} s, more than the limit of "
                f"{self.limits.max_duration_s:.0f} s (POSTCALL_MAX_DURATION_S)"
            )

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
            self.blobs.delete(document_key(t.id))

    # --- transcriptions -----------------------------------------------------------
    def request_transcription(
        self, tenant: str, recording_id: str, *, language: str | None = None
    ) -> Transcription:
        """Queue a transcription of a stored recording."""
        try:
            lang = normalize_language(language, self.default_language)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="language") from None
        now = utcnow()
        transcription = Transcription(
            id=new_id("tr"),
            recording_id=recording_id,
            tenant=tenant,
            status=TranscriptionStatus.QUEUED,
            options=TranscriptionOptions(language=lang),
            created_at=now,
            updated_at=now,
        )
        self.store.add_transcription(transcription)
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
        self.blobs.delete(document_key(transcription_id))

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
