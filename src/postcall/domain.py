"""The domain: recordings, transcriptions (jobs) and transcript documents.

Plain frozen dataclasses and enums. No I/O, no HTTP, no SQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


def new_id(prefix: str) -> str:
    """A random, prefixed id such as ``tr_3f9c…`` (128 bits of randomness)."""
    return f"{prefix}_{secrets.token_hex(16)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class TranscriptionStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TranscriptionStatus.COMPLETED, TranscriptionStatus.FAILED)


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of a recording's container."""

    index: int
    codec: str
    channels: int
    sample_rate: int
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What probing a recording found."""

    format: str
    duration: float
    streams: tuple[AudioStreamInfo, ...]

    @property
    def channels(self) -> int:
        return self.streams[0].channels if self.streams else 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MediaInfo:
        """The inverse of ``dataclasses.asdict`` (as a store or the decode child wrote
        it); other keys are ignored."""
        return cls(
            format=data["format"],
            duration=float(data["duration"]),
            streams=tuple(AudioStreamInfo(**s) for s in data["streams"]),
        )


@dataclass(frozen=True)
class Participant:
    """A person in the recording, as the client named them in its metadata."""

    id: str
    name: str
    is_host: bool = False
    platform: str | None = None
    extra_data: Mapping[str, Any] = field(default_factory=dict)


def participants_from_metadata(metadata: Mapping[str, Any]) -> tuple[Participant, ...]:
    """Participants listed under ``metadata["participants"]`` (malformed entries skipped)."""
    raw = metadata.get("participants")
    if not isinstance(raw, list):
        return ()
    found: list[Participant] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            continue
        extra = item.get("extra_data")
        found.append(
            Participant(
                id=str(item.get("id", i + 1)),
                name=name.strip(),
                is_host=bool(item.get("is_host", False)),
                platform=item.get("platform") if isinstance(item.get("platform"), str) else None,
                extra_data=extra if isinstance(extra, Mapping) else {},
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class TimelineEvent:
    """The platform said ``participant_id`` was the active speaker from start to end."""

    participant_id: str
    start: float
    end: float


def timeline_from_metadata(metadata: Mapping[str, Any]) -> tuple[TimelineEvent, ...]:
    """Active-speaker events under ``metadata["speaker_timeline"]`` (validated on upload)."""
    raw = metadata.get("speaker_timeline")
    if not isinstance(raw, list):
        return ()
    return tuple(
        TimelineEvent(str(e["participant_id"]), float(e["start"]), float(e["end"]))
        for e in raw
        if isinstance(e, Mapping)
    )


def recording_tracks(recording: Recording) -> tuple[Track, ...]:
    """Each participant's own audio in a recording, if it has any.

    Separately uploaded files; else a ``channels`` map in the metadata
    (``{"0": participant_id, …}``: channel → participant of a multichannel file); else a
    ``streams`` map (audio stream number → participant); else, for a container with
    several audio streams, one track per stream (speakers unnamed).
    """
    if recording.tracks:
        return recording.tracks
    media = recording.media
    for key in ("channels", "streams"):
        mapping = recording.metadata.get(key)
        if isinstance(mapping, Mapping) and mapping:
            tracks = []
            for number, participant in sorted(mapping.items(), key=lambda kv: int(kv[0])):
                n = int(number)
                tracks.append(
                    Track(
                        participant_id=str(participant),
                        media_key=recording.media_key,
                        stream_index=media.streams[n].index if key == "streams" else None,
                        channel=n if key == "channels" else None,
                        duration=media.duration,
                    )
                )
            return tuple(tracks)
    if len(media.streams) > 1:
        return tuple(
            Track(f"stream-{i}", recording.media_key, stream_index=s.index, duration=media.duration)
            for i, s in enumerate(media.streams)
        )
    return ()


STARTED_AT_YEARS = (1970, 2100)
"""The years a recording's ``started_at`` may lie in."""


def started_at_from_metadata(metadata: Mapping[str, Any]) -> datetime | None:
    """``metadata["started_at"]`` (ISO 8601) as an aware time, if present and valid."""
    raw = metadata.get("started_at")
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # Refused on upload (postcall.metadata); a time stored before that is ignored, since
    # adding a recording's length to it could leave the calendar.
    return value if STARTED_AT_YEARS[0] <= value.year <= STARTED_AT_YEARS[1] else None


def default_speaker(metadata: Mapping[str, Any]) -> str:
    """The label for speech with no speaker information.

    The recording's single named participant when its metadata names exactly one,
    else ``Speaker 1``.
    """
    participants = participants_from_metadata(metadata)
    return participants[0].name if len(participants) == 1 else "Speaker 1"


@dataclass(frozen=True)
class Track:
    """One participant's own audio: a separate file, a stream of the file, or a channel.

    ``offset`` is where the track starts on the recording's timeline (seconds).
    """

    participant_id: str
    media_key: str
    offset: float = 0.0
    stream_index: int | None = None
    channel: int | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class Recording:
    id: str
    tenant: str
    created_at: datetime
    media_key: str
    filename: str
    content_type: str
    size: int
    media: MediaInfo
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tracks: tuple[Track, ...] = ()
    """Separately uploaded per-participant files (empty for a single upload)."""


class SpeakerMode(StrEnum):
    """Where speaker attribution comes from (see ``postcall.speakers.attribution``)."""

    AUTO = "auto"
    SEPARATE_STREAMS = "separate_streams"
    TIMELINE = "timeline"
    DIARIZE = "diarize"
    NONE = "none"


@dataclass(frozen=True)
class TranscriptionOptions:
    """What the client asked for. ``language`` None means detect it.

    ``speakers`` picks the attribution mode; the speaker counts bound diarization.
    """

    language: str | None = "en"
    speakers: SpeakerMode = SpeakerMode.AUTO
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    prompt: str | None = None
    """Text the model is primed with (names, jargon); Whisper's initial prompt."""
    requested: dict[str, Any] = field(default_factory=dict)
    """The request as its API style phrased it, echoed back (the Recall-style API keeps
    its ``provider`` and ``diarization`` blocks here)."""
    enroll_voiceprints: bool = False
    """Separate streams: save (or update) a voiceprint of each participant's own speech."""
    match_voiceprints: bool = True
    """Diarization: name speakers whose voice matches one of the tenant's voiceprints."""


@dataclass(frozen=True)
class TranscriptionError:
    code: str
    message: str


@dataclass(frozen=True)
class VoiceprintNote:
    """What a job did with voiceprints, for one participant or diarized speaker.

    ``outcome``: ``enrolled`` (a new voiceprint), ``updated`` (an earlier one refined),
    ``skipped`` (too little speech; ``message`` says why) or ``matched`` (a diarized
    speaker named after the voiceprint's participant, with its ``similarity``)."""

    participant_id: str
    outcome: str
    message: str
    voiceprint_id: str | None = None
    similarity: float | None = None


@dataclass(frozen=True)
class TranscriptionResult:
    """The summary kept in the store once a transcription completed."""

    language: str
    duration: float
    segment_count: int
    document_key: str
    voiceprints: tuple[VoiceprintNote, ...] = ()


@dataclass(frozen=True)
class Transcription:
    """A request to transcribe one recording: it is also the job."""

    id: str
    recording_id: str
    tenant: str
    status: TranscriptionStatus
    options: TranscriptionOptions
    created_at: datetime
    updated_at: datetime
    progress: float = 0.0
    attempts: int = 0
    result: TranscriptionResult | None = None
    error: TranscriptionError | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def with_status(self, status: TranscriptionStatus, now: datetime) -> Transcription:
        return replace(self, status=status, updated_at=now)


# --- the transcript document -------------------------------------------------


@dataclass(frozen=True)
class Word:
    """One word; times in seconds from the start of the recording."""

    start: float
    end: float
    text: str
    probability: float

    def shifted(self, offset: float) -> Word:
        return replace(self, start=self.start + offset, end=self.end + offset)


@dataclass(frozen=True)
class Segment:
    """A run of speech by one speaker; times in seconds from the start of the recording."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None

    def shifted(self, offset: float) -> Segment:
        return replace(
            self,
            start=self.start + offset,
            end=self.end + offset,
            words=tuple(w.shifted(offset) for w in self.words),
        )


@dataclass(frozen=True)
class TranscriptDocument:
    """The full transcript, as stored in the blob store and rendered by ``formats``."""

    transcription_id: str
    recording_id: str
    language: str
    duration: float
    segments: tuple[Segment, ...]
    participants: tuple[Participant, ...] = ()
    started_at: datetime | None = None
    """When the recording started (from its metadata), for absolute word times."""

    @property
    def speakers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for seg in self.segments:
            if seg.speaker is not None:
                seen.setdefault(seg.speaker, None)
        return tuple(seen)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


def label_segments(segments: Sequence[Segment], speaker: str) -> tuple[Segment, ...]:
    """Give every segment without a speaker the ``speaker`` label."""
    return tuple(s if s.speaker else replace(s, speaker=speaker) for s in segments)


@dataclass(frozen=True)
class Voiceprint:
    """A known voice: the centroid embedding of a participant's speech, per tenant.

    Never audio: ``embedding`` is the speaker encoder's L2-normalised vector (the
    duration-weighted mean of every enrolment), ``model`` the encoder's identity (only
    embeddings of the same model are compared), ``seconds`` how much speech it was made
    from, ``source`` where the last enrolment came from (``recording:<id>``, ``sample``).
    """

    id: str
    tenant: str
    participant_id: str
    name: str
    embedding: tuple[float, ...]
    model: str
    seconds: float
    source: str
    created_at: datetime
    updated_at: datetime


def key_id(key_hash: str) -> str:
    """An API key's public id: a prefix of its hash (names a key without revealing it)."""
    return f"key_{key_hash[:12]}"


@dataclass(frozen=True)
class ApiKey:
    """A stored API key: its hash (never the key), label, tenant and use."""

    key_hash: str
    name: str
    tenant: str
    created_at: datetime
    last_used_at: datetime | None = None

    @property
    def id(self) -> str:
        return key_id(self.key_hash)
