"""Transcript use cases beside the core service: download links and filtered listing.

A finished transcript's download link is either a pre-signed URL of the blob store
(S3: the rendering is written once beside the document, then signed) or, where the
store cannot sign (the local folder), a link to postcall itself carrying an HMAC
token (``postcall.signing``) that the API checks before serving the rendering.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from postcall import formats
from postcall.domain import (
    Recording,
    SpeakerMode,
    Transcription,
    TranscriptionStatus,
    recording_tracks,
    timeline_from_metadata,
)
from postcall.errors import NotFound
from postcall.service import Service, rendering_key
from postcall.signing import LinkSigner
from postcall.store.base import Page, encode_cursor

LINK_KIND = "transcript"
SECRET_NAME = "link-signing"
MAX_LINK_TTL_S = 7 * 24 * 3600


def speaker_mode(recording: Recording, use_separate_streams: bool) -> SpeakerMode:
    """The Recall-style ``use_separate_streams_when_available`` as a speaker mode.

    True: each participant's own stream when the recording has them. False: the mixed
    audio, attributed by the speaker timeline when the recording carries one; only a
    recording made of separately uploaded files (which has no mixed audio) still uses
    its streams. Anything else falls back to the automatic mode.
    """
    has_tracks = bool(recording_tracks(recording))
    if use_separate_streams or recording.tracks:
        return SpeakerMode.SEPARATE_STREAMS if has_tracks else SpeakerMode.AUTO
    if timeline_from_metadata(recording.metadata):
        return SpeakerMode.TIMELINE
    return SpeakerMode.NONE


@dataclass(frozen=True)
class DownloadLink:
    url: str
    expires_at: float


class Transcripts:
    """Download links to finished transcripts, and listings filtered by status."""

    def __init__(
        self,
        service: Service,
        *,
        ttl_s: int,
        secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= ttl_s <= MAX_LINK_TTL_S:
            raise ValueError(f"the link lifetime must be between 1 s and {MAX_LINK_TTL_S} s")
        self.service = service
        self.ttl_s = ttl_s
        self._clock = clock
        store = service.store
        self.signer = LinkSigner(
            (lambda: secret) if secret else lambda: store.server_secret(SECRET_NAME, _new()),
            clock=clock,
        )

    # --- download links ------------------------------------------------------------
    def download_link(
        self, transcription: Transcription, base_url: str, fmt: str = "recall"
    ) -> DownloadLink | None:
        """A fresh link to the finished transcript in ``fmt``; None before it is done."""
        t = transcription
        if t.status is not TranscriptionStatus.COMPLETED or t.result is None:
            return None
        expires = self._clock() + self.ttl_s
        blobs = self.service.blobs
        key = rendering_key(t.id, fmt)
        url = blobs.presign_get(key, self.ttl_s)
        if url is not None:
            if not blobs.exists(key):
                document = self.service.load_document(t)
                blobs.put_bytes(key, formats.render(document, fmt).encode())
            return DownloadLink(url, expires)
        token = self.signer.sign(LINK_KIND, t.tenant, t.id, ttl_s=self.ttl_s)
        base = base_url.rstrip("/")
        return DownloadLink(f"{base}/api/v1/transcript/{t.id}/download/?token={token}", expires)

    def open_link(self, transcription_id: str, token: str, fmt: str = "recall") -> str:
        """The rendering a valid token for ``transcription_id`` grants.

        ``Forbidden`` for a tampered or expired token; ``NotFound`` when the token is
        for another transcript (or tenant) or the transcript is gone or not finished.
        """
        target = self.signer.verify(token, LINK_KIND)
        if target.object_id != transcription_id:
            raise NotFound(f"transcription {transcription_id!r} not found")
        document = self.service.get_document(target.tenant, transcription_id)
        return formats.render(document, fmt)

    # --- listing -----------------------------------------------------------------------
    def list(
        self,
        tenant: str,
        *,
        recording_id: str | None,
        statuses: Iterable[TranscriptionStatus] | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Transcription]:
        """Newest first; only transcriptions in ``statuses`` when given.

        The store pages through everything and this keeps the matches; the cursor
        points after the last transcription returned, so no match is skipped.
        """
        wanted = None if statuses is None else set(statuses)
        found: list[Transcription] = []
        while True:
            # The store, not the service: an unknown recording filters to nothing.
            page = self.service.store.list_transcriptions(
                tenant, recording_id=recording_id, limit=max(limit, 100), cursor=cursor
            )
            for t in page.items:
                if wanted is None or t.status in wanted:
                    found.append(t)
                    if len(found) == limit:
                        more = t is not page.items[-1] or page.next_cursor is not None
                        nxt = encode_cursor(t.created_at.timestamp(), t.id) if more else None
                        return Page(found, nxt)
            if page.next_cursor is None:
                return Page(found, None)
            cursor = page.next_cursor


def _new() -> str:
    return secrets.token_urlsafe(32)
