"""Voiceprints: known voices, named in diarized recordings. Pure functions, no I/O.

A voiceprint is the centroid of a participant's speaker embeddings (the encoder's
L2-normalised vector of their speech), kept per tenant and participant. It is made
from speech known to be theirs (their own stream of a separate-streams recording, or
an uploaded sample) and updated as a running mean weighted by seconds of speech.

Matching compares each diarized speaker's centroid (from its turns' audio) with the
tenant's voiceprints by cosine similarity and assigns them one-to-one, best pair
first, above a threshold. Embeddings of different encoders are not comparable: a
voiceprint only matches embeddings of the same ``model_id``.

Everything that embeds audio goes through a ``speakers.embedding.SpeakerEmbedder``
(``embed_utterance`` and ``model_id``): the bundled encoder or the operator's model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from postcall.domain import Voiceprint
from postcall.speakers.embedding import SpeakerEmbedder

Array = npt.NDArray[np.float32]
SAMPLE_RATE = 16000

MIN_ENROL_SPEECH_S = 5.0
"""Least speech (s) a voiceprint is made from: a shorter stretch gives a noisy centroid."""

MAX_EMBED_S = 60.0
"""Most speech (s) embedded for one voice: the centroid has settled long before, and the
encoder's cost grows with the audio."""

MIN_MATCH_SPEECH_S = 3.0
"""Least speech (s) a diarized speaker needs to be matched to a voiceprint."""

DEFAULT_THRESHOLD = 0.80
"""Cosine similarity a diarized speaker needs with a voiceprint to take its name.

Chosen on the development set of ``bench/voiceprints.py`` (``--set dev``; its report
set was not used): the true pairs' similarities were 0.944-0.978, the impostors'
0.461-0.665; 0.80 is about the middle of that gap, leaving room for a voice heard
through another microphone or line than the one it was enrolled from."""

HIGHPASS_HZ = 200.0
"""Rumble cut before embedding (as the diarizer does), on both sides of a comparison."""

_EDGE_S = 0.15  # trimmed from both ends of a diarized turn: its edges are the least sure
_MIN_TURN_S = 0.8  # shorter turns (back-channels, cross-talk) are left out when others exist


@dataclass(frozen=True)
class VoiceSample:
    """An embedding and the seconds of speech it was made from."""

    embedding: Array
    seconds: float


def speech_of(
    audio: Array, regions: Iterable[tuple[float, float]], *, max_s: float = MAX_EMBED_S
) -> Array:
    """The samples of ``regions`` (seconds) of ``audio``, joined, at most ``max_s``."""
    pieces: list[Array] = []
    left = int(max_s * SAMPLE_RATE)
    for start, end in sorted(regions):
        a = max(0, round(start * SAMPLE_RATE))
        b = min(audio.size, round(end * SAMPLE_RATE), a + left)
        if b > a:
            pieces.append(audio[a:b])
            left -= b - a
        if left <= 0:
            break
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces).astype(np.float32, copy=False)


def embed_speech(
    embedder: SpeakerEmbedder,
    audio: Array,
    regions: Iterable[tuple[float, float]],
    *,
    max_s: float = MAX_EMBED_S,
) -> VoiceSample | None:
    """The voice of ``regions`` of ``audio`` (16 kHz mono), or None without speech."""
    from postcall.speakers.encoder import highpass

    speech = speech_of(audio, regions, max_s=max_s)
    if speech.size < SAMPLE_RATE // 2:
        return None
    filtered = highpass(speech, HIGHPASS_HZ) if HIGHPASS_HZ > 0 else speech
    vector = np.asarray(embedder.embed_utterance(filtered), dtype=np.float32)
    return VoiceSample(_unit(vector), speech.size / SAMPLE_RATE)


def speaker_regions(
    turns: Iterable[tuple[float, float, str]],
) -> dict[str, list[tuple[float, float]]]:
    """Each diarized speaker's surest speech: its turns with their edges trimmed, the
    short ones left out when it has longer ones."""
    by_speaker: dict[str, list[tuple[float, float]]] = {}
    for start, end, speaker in turns:
        by_speaker.setdefault(speaker, []).append((start, end))
    out: dict[str, list[tuple[float, float]]] = {}
    for speaker, spans in by_speaker.items():
        long = [(a + _EDGE_S, b - _EDGE_S) for a, b in spans if b - a >= _MIN_TURN_S]
        out[speaker] = long or spans
    return out


def merged(
    old: Sequence[float], old_seconds: float, new: Sequence[float], new_seconds: float
) -> tuple[tuple[float, ...], float]:
    """A running centroid: ``old`` and ``new`` weighted by their seconds of speech,
    normalised again. Returns the embedding and the seconds it now stands for."""
    a, b = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if a.shape != b.shape:
        return tuple(float(x) for x in b), new_seconds  # another encoder: start over
    total = old_seconds + new_seconds
    if total <= 0:
        return tuple(float(x) for x in b), new_seconds
    mean = (a * old_seconds + b * new_seconds) / total
    return tuple(float(x) for x in _unit(mean)), total


@dataclass(frozen=True)
class Match:
    """A diarized speaker recognised as a voiceprint's participant."""

    speaker: str
    voiceprint: Voiceprint
    similarity: float


def match(
    speakers: Mapping[str, VoiceSample],
    prints: Sequence[Voiceprint],
    *,
    model_id: str,
    threshold: float = DEFAULT_THRESHOLD,
    participant_ids: Iterable[str] | None = None,
    min_speech_s: float = MIN_MATCH_SPEECH_S,
) -> dict[str, Match]:
    """Diarized speakers (label → voice) matched one-to-one to voiceprints.

    Only voiceprints of ``model_id`` take part, and only those of ``participant_ids``
    when given (the participants the recording names). Pairs are taken best first
    (greedy on cosine similarity): each speaker gets at most one participant and each
    participant at most one speaker, and only pairs at or above ``threshold``. A
    speaker with less than ``min_speech_s`` of speech is not matched.
    """
    allowed = None if participant_ids is None else set(participant_ids)
    # One print per participant: the one built from the most speech (a tenant could
    # hold several from before a participant was re-enrolled).
    best_print: dict[str, Voiceprint] = {}
    for vp in prints:
        if vp.model != model_id or (allowed is not None and vp.participant_id not in allowed):
            continue
        held = best_print.get(vp.participant_id)
        if held is None or vp.seconds > held.seconds:
            best_print[vp.participant_id] = vp
    candidates = list(best_print.values())
    labels = [s for s, v in speakers.items() if v.seconds >= min_speech_s]
    if not candidates or not labels:
        return {}
    left = np.stack([_unit(speakers[s].embedding) for s in labels])
    right = np.stack([_unit(np.asarray(vp.embedding, dtype=np.float32)) for vp in candidates])
    if left.shape[1] != right.shape[1]:
        return {}
    scores = left @ right.T
    pairs = sorted(
        ((float(scores[i, j]), i, j) for i in range(len(labels)) for j in range(len(candidates))),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    found: dict[str, Match] = {}
    taken: set[int] = set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if labels[i] in found or j in taken:
            continue
        found[labels[i]] = Match(labels[i], candidates[j], score)
        taken.add(j)
    return found


def _unit(vector: npt.NDArray[np.floating[Any]]) -> Array:
    norm = float(np.linalg.norm(vector))
    out: Array = (vector / norm if norm > 0 else vector).astype(np.float32)
    return out
