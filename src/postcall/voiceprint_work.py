"""Voiceprints in jobs and from samples: enrolment from audio, and naming diarized
speakers. The I/O around ``postcall.speakers.voiceprints`` (which is pure).

- ``enrol_tracks``: a separate-streams job with ``enroll_voiceprints`` saves (or
  refines) a voiceprint of each named participant from their own track's speech.
- ``enrol_audio``: the same from one stretch of speech; ``enrol_sample`` from an
  uploaded sample.
- ``name_turns``: a diarize job's turns relabelled with the participants whose
  voiceprints they match.

Speech is read a block at a time and only until ``MAX_EMBED_S`` of it is found, so a
long track costs little memory or time. No audio is kept anywhere: only embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from postcall import audio
from postcall.blobs.base import BlobStore
from postcall.domain import (
    Participant,
    Recording,
    Voiceprint,
    VoiceprintNote,
    new_id,
    participants_from_metadata,
    recording_tracks,
    utcnow,
)
from postcall.errors import InvalidInput
from postcall.speakers import voiceprints as vp
from postcall.speakers.attribution import Turn
from postcall.speakers.embedding import SpeakerEmbedder
from postcall.store.base import Store

log = logging.getLogger(__name__)

Regions = Callable[[vp.Array], list[tuple[float, float]]]
"""Finds speech in 16 kHz mono audio: (start, end) seconds."""


@dataclass(frozen=True)
class VoiceprintConfig:
    """How voiceprints are made and matched (``POSTCALL_VOICEPRINT_*``)."""

    threshold: float = vp.DEFAULT_THRESHOLD
    min_speech_s: float = vp.MIN_ENROL_SPEECH_S


def silero_regions(samples: vp.Array) -> list[tuple[float, float]]:
    """Speech as the diarizer finds it (Silero VAD with its far-field conditioning)."""
    from postcall.speakers import diarize

    opts = diarize.DiarizeOptions()
    return diarize.speech_regions(
        samples,
        threshold=opts.vad_threshold,
        highpass_hz=opts.highpass_hz,
        peak_dbfs=opts.vad_peak_dbfs,
        local_gain=opts.vad_local_gain,
    )


def energy_regions(samples: vp.Array) -> list[tuple[float, float]]:
    """Speech from frame energy: no model to load (for clean samples, in the API)."""
    from postcall.speakers import diarize

    return diarize.energy_regions(samples)


def collect_speech(
    blocks: Iterable[vp.Array], regions: Regions, *, max_s: float = vp.MAX_EMBED_S
) -> vp.Array:
    """The speech of ``blocks`` (in order), joined, up to ``max_s`` seconds; the rest of
    the audio is not read."""
    found: list[vp.Array] = []
    held = 0
    limit = int(max_s * vp.SAMPLE_RATE)
    for block in blocks:
        speech = vp.speech_of(block, regions(block), max_s=(limit - held) / vp.SAMPLE_RATE)
        if speech.size:
            found.append(speech)
            held += speech.size
        if held >= limit:
            break
    return np.concatenate(found) if found else np.zeros(0, np.float32)


def _blocks(
    path: str, *, stream_index: int | None, channel: int | None, max_s: float
) -> Iterator[vp.Array]:
    yield from audio.decode(
        path, stream_index=stream_index, channel=channel, block_s=30.0, max_s=max_s
    )


def enrol_audio(
    store: Store,
    embedder: SpeakerEmbedder,
    speech: vp.Array,
    *,
    tenant: str,
    participant_id: str,
    name: str,
    source: str,
    min_speech_s: float,
) -> tuple[Voiceprint | None, VoiceprintNote]:
    """Save (or refine) the participant's voiceprint from ``speech`` (speech only);
    nothing is saved when it holds less than ``min_speech_s``."""
    seconds = speech.size / vp.SAMPLE_RATE
    if seconds < min_speech_s:
        return None, VoiceprintNote(
            participant_id,
            "skipped",
            f"only {seconds:.1f} s of speech; a voiceprint needs at least {min_speech_s:g} s",
        )
    sample = vp.embed_speech(embedder, speech, [(0.0, seconds)])
    if sample is None:  # pragma: no cover - more than min_speech_s of audio embeds
        return None, VoiceprintNote(participant_id, "skipped", "no speech to embed")
    now = utcnow()
    held = store.find_voiceprint(tenant, participant_id, embedder.model_id)
    if held is not None and held.source == source and source.startswith("recording:"):
        # The job ran again (a retry after a crash, or the recording transcribed once
        # more): its speech is in the voiceprint already and must not count twice.
        return held, VoiceprintNote(
            participant_id,
            "skipped",
            "already enrolled from this recording",
            voiceprint_id=held.id,
        )
    embedding = tuple(float(x) for x in sample.embedding)
    total = sample.seconds
    if held is not None:
        embedding, total = vp.merged(held.embedding, held.seconds, embedding, sample.seconds)
    saved = store.put_voiceprint(
        Voiceprint(
            id=held.id if held is not None else new_id("vp"),
            tenant=tenant,
            participant_id=participant_id,
            name=name,
            embedding=embedding,
            model=embedder.model_id,
            seconds=total,
            source=source,
            created_at=held.created_at if held is not None else now,
            updated_at=now,
        )
    )
    outcome = "updated" if held is not None else "enrolled"
    return saved, VoiceprintNote(
        participant_id,
        outcome,
        f"{outcome} from {sample.seconds:.1f} s of speech ({saved.seconds:.1f} s in all)",
        voiceprint_id=saved.id,
    )


def enrol_tracks(
    store: Store,
    blobs: BlobStore,
    recording: Recording,
    embedder: SpeakerEmbedder,
    config: VoiceprintConfig,
    *,
    max_duration_s: float,
) -> tuple[VoiceprintNote, ...]:
    """A voiceprint for each named participant of a separate-streams recording, from
    the speech of their own track."""
    names = {p.id: p.name for p in participants_from_metadata(recording.metadata)}
    notes: list[VoiceprintNote] = []
    for track in recording_tracks(recording):
        pid = track.participant_id
        if pid not in names:
            notes.append(
                VoiceprintNote(
                    pid, "skipped", "the recording's metadata does not name this participant"
                )
            )
            continue
        with blobs.local_file(track.media_key) as path:
            speech = collect_speech(
                _blocks(
                    str(path),
                    stream_index=track.stream_index,
                    channel=track.channel,
                    max_s=max_duration_s,
                ),
                silero_regions,
            )
        _, note = enrol_audio(
            store,
            embedder,
            speech,
            tenant=recording.tenant,
            participant_id=pid,
            name=names[pid],
            source=f"recording:{recording.id}",
            min_speech_s=config.min_speech_s,
        )
        log.info("recording %s: voiceprint of %s %s", recording.id, pid, note.outcome)
        notes.append(note)
    return tuple(notes)


@dataclass(frozen=True)
class Named:
    """Diarization turns with matched speakers relabelled by participant id."""

    turns: list[Turn]
    names: dict[str, str]
    participants: tuple[Participant, ...]
    """Matched participants the recording's metadata does not list (for the document)."""
    notes: tuple[VoiceprintNote, ...]


def name_turns(
    store: Store,
    embedder: SpeakerEmbedder,
    mono: vp.Array,
    turns: Sequence[Turn],
    recording: Recording,
    config: VoiceprintConfig,
) -> Named:
    """Match each diarized speaker of ``turns`` (on ``mono``) to the tenant's
    voiceprints; restricted to the participants the recording names, when it names any."""
    listed = participants_from_metadata(recording.metadata)
    prints = store.voiceprints_of_model(recording.tenant, embedder.model_id)
    if listed:
        wanted = {p.id for p in listed}
        prints = [p for p in prints if p.participant_id in wanted]
    if not prints:
        return Named(list(turns), {}, (), ())
    samples = {}
    for label, spans in vp.speaker_regions((t.start, t.end, t.speaker) for t in turns).items():
        sample = vp.embed_speech(embedder, mono, spans)
        if sample is not None:
            samples[label] = sample
    found = vp.match(samples, prints, model_id=embedder.model_id, threshold=config.threshold)
    names = {p.id: p.name for p in listed}
    extra: list[Participant] = []
    notes: list[VoiceprintNote] = []
    for label, m in sorted(found.items()):
        pid = m.voiceprint.participant_id
        if pid not in names:
            names[pid] = m.voiceprint.name
            extra.append(Participant(pid, m.voiceprint.name))
        notes.append(
            VoiceprintNote(
                pid,
                "matched",
                f"a diarized speaker ({samples[label].seconds:.1f} s of speech) is "
                f"{names[pid]} (similarity {m.similarity:.3f})",
                voiceprint_id=m.voiceprint.id,
                similarity=round(m.similarity, 4),
            )
        )
    relabelled = [
        Turn(t.start, t.end, found[t.speaker].voiceprint.participant_id)
        if t.speaker in found
        else t
        for t in turns
    ]
    used = {m.voiceprint.participant_id for m in found.values()}
    return Named(
        relabelled, {k: v for k, v in names.items() if k in used}, tuple(extra), tuple(notes)
    )


MAX_SAMPLE_S = 300.0
"""Only the first this many seconds of an uploaded sample are read."""
MAX_PARTICIPANT_ID = 256
MAX_NAME = 256


def check_participant(participant_id: str | None, name: str | None) -> tuple[str, str]:
    """A sample's participant id and name, stripped; ``InvalidInput`` naming the field."""
    pid = (participant_id or "").strip()
    shown = (name or "").strip()
    if not pid or len(pid) > MAX_PARTICIPANT_ID:
        raise InvalidInput(
            f"participant_id is required: 1 to {MAX_PARTICIPANT_ID} characters",
            field="participant_id",
        )
    if not shown or len(shown) > MAX_NAME:
        raise InvalidInput(f"name is required: 1 to {MAX_NAME} characters", field="name")
    return pid, shown


def enrol_sample(
    store: Store,
    blobs: BlobStore,
    key: str,
    embedder: SpeakerEmbedder,
    config: VoiceprintConfig,
    *,
    tenant: str,
    participant_id: str,
    name: str,
) -> Voiceprint:
    """Save (or refine) a voiceprint from an uploaded sample stored under ``key``.

    Speech is found by frame energy (no model is loaded in the API process, so a sample
    should be clean speech); ``InvalidInput`` (``too_little_speech``) when it holds less
    than ``config.min_speech_s``. The sample itself is not kept: the caller deletes it.
    """
    with blobs.local_file(key) as path:
        speech = collect_speech(
            audio.decode(str(path), block_s=30.0, end=MAX_SAMPLE_S), energy_regions
        )
    saved, note = enrol_audio(
        store,
        embedder,
        speech,
        tenant=tenant,
        participant_id=participant_id,
        name=name,
        source="sample",
        min_speech_s=config.min_speech_s,
    )
    if saved is None:
        raise InvalidInput(
            f"the sample has {note.message} (in its first {MAX_SAMPLE_S:g} s)",
            field="file",
            code="too_little_speech",
        )
    return saved
