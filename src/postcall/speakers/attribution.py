"""Who said what: attribute words to speakers and name them. Pure functions, no I/O.

Three sources of speaker information, from exact to inferred:

- separate streams (a track or channel per participant): each stream's segments
  already belong to one speaker; ``merge_streams`` interleaves them by time;
- a speaker timeline (the platform's active-speaker events) or diarization turns:
  ``attribute`` gives each word the speaker whose turn overlaps it most and splits
  segments where the speaker changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from postcall.domain import Participant, Segment, SpeakerMode, TranscriptDocument, Word
from postcall.errors import InvalidInput

# A word in no turn takes the nearest turn's speaker when that turn is this close.
NEAREST_TURN_S = 1.0


@dataclass(frozen=True)
class Turn:
    """A stretch of time during which ``speaker`` was talking."""

    start: float
    end: float
    speaker: str


def merge_streams(streams: Mapping[str, Sequence[Segment]]) -> tuple[Segment, ...]:
    """Label each stream's segments with its speaker and merge them in time order."""
    labelled = [replace(s, speaker=speaker) for speaker, segs in streams.items() for s in segs]
    return tuple(sorted(labelled, key=lambda s: (s.start, s.end)))


def attribute(
    segments: Iterable[Segment], turns: Sequence[Turn], *, fallback: str = "Speaker 1"
) -> tuple[Segment, ...]:
    """Give every word a speaker from ``turns`` and split segments at speaker changes.

    A word belongs to the turn that overlaps it most. A word in a gap between turns
    takes the nearest turn's speaker if it is within ``NEAREST_TURN_S``, else the
    speaker of the word before it (speech rarely changes hands in a silence nobody
    reported), else ``fallback``. A segment without word timings is attributed as one
    word spanning the segment.
    """
    ordered = sorted(turns, key=lambda t: (t.start, t.end))
    starts = [t.start for t in ordered]
    result: list[Segment] = []
    previous: str | None = None
    for segment in segments:
        words = segment.words or (Word(segment.start, segment.end, segment.text, 1.0),)
        labels: list[str] = []
        for word in words:
            label = _speaker_at(word.start, word.end, ordered, starts) or previous or fallback
            labels.append(label)
            previous = label
        if not segment.words:
            result.append(replace(segment, speaker=labels[0]))
            continue
        result.extend(_split(segment, labels))
    return tuple(result)


def _speaker_at(start: float, end: float, turns: Sequence[Turn], starts: list[float]) -> str | None:
    """The speaker of the turn overlapping [start, end] most, else of the nearest turn."""
    if not turns:
        return None
    longest = max(t.end - t.start for t in turns)
    lo = bisect.bisect_left(starts, start - longest - NEAREST_TURN_S)
    hi = bisect.bisect_right(starts, end + NEAREST_TURN_S)
    best: tuple[float, str] | None = None
    nearest: tuple[float, str] | None = None
    for t in turns[lo:hi]:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > 0:
            if best is None or overlap > best[0]:
                best = (overlap, t.speaker)
        elif -overlap <= NEAREST_TURN_S and (nearest is None or -overlap < nearest[0]):
            nearest = (-overlap, t.speaker)
    if best is not None:
        return best[1]
    return nearest[1] if nearest is not None else None


def _split(segment: Segment, labels: Sequence[str]) -> list[Segment]:
    """Cut a segment into runs of consecutive words with the same speaker."""
    runs: list[Segment] = []
    run: list[Word] = []
    speaker = labels[0]
    for word, label in zip(segment.words, labels, strict=True):
        if label != speaker and run:
            runs.append(_segment_of(run, speaker))
            run = []
        speaker = label
        run.append(word)
    runs.append(_segment_of(run, speaker))
    if len(runs) == 1:  # keep the model's own text (with its punctuation) when unsplit
        return [replace(segment, speaker=speaker)]
    return runs


def _segment_of(words: Sequence[Word], speaker: str) -> Segment:
    return Segment(
        start=words[0].start,
        end=words[-1].end,
        text=" ".join(w.text for w in words).strip(),
        words=tuple(words),
        speaker=speaker,
    )


def name_speakers(segments: Sequence[Segment], names: Mapping[str, str]) -> tuple[Segment, ...]:
    """Replace speaker keys with display names.

    Keys found in ``names`` (participant ids) take the participant's name; the rest
    become ``Speaker 1``, ``Speaker 2``, … in order of first appearance.
    """
    anonymous: dict[str, str] = {}
    used = set(names.values())
    out = []
    for s in segments:
        key = s.speaker or ""
        if key in names:
            label = names[key]
        else:
            if key not in anonymous:
                n = len(anonymous) + 1
                while f"Speaker {n}" in used:
                    n += 1
                anonymous[key] = f"Speaker {n}"
                used.add(anonymous[key])
            label = anonymous[key]
        out.append(replace(s, speaker=label))
    return tuple(out)


def with_current_names(
    doc: TranscriptDocument, participants: Sequence[Participant]
) -> TranscriptDocument:
    """The document with its speakers named as the recording's participants are *now*.

    A transcript keeps the names its recording had when it was made; a participant
    renamed since (``PATCH /v1/recordings/{id}``) renames every segment labelled with
    the old name, in every format. A speaker with no participant behind it (``Speaker
    2`` of a diarized recording) is renamed by a participant whose id is that label.
    """
    current = {p.id: p for p in participants}
    by_label: dict[str, str] = {}
    labelled: set[str] = set()  # participants named after a label they now rename
    for p in doc.participants:
        if p.id in current and current[p.id].name != p.name:
            by_label[p.name] = current[p.id].name
    for label in doc.speakers:
        renamed = label in current and current[label].name != label
        if renamed and label not in by_label and all(p.name != label for p in doc.participants):
            by_label[label] = current[label].name
            labelled.add(label)
    known = {p.id for p in doc.participants}
    now = tuple(current.get(p.id, p) for p in doc.participants) + tuple(
        p for p in participants if p.id not in known and p.id in labelled
    )
    if not by_label and now == doc.participants:
        return doc
    segments = tuple(
        replace(s, speaker=by_label.get(s.speaker, s.speaker)) if s.speaker else s
        for s in doc.segments
    )
    return replace(doc, segments=segments, participants=now)


def resolve_mode(
    requested: SpeakerMode,
    *,
    has_tracks: bool,
    has_timeline: bool,
    can_diarize: bool,
) -> SpeakerMode:
    """The attribution mode to use; ``InvalidInput`` when the recording cannot give it.

    ``auto`` takes separate streams when the recording has them, else the speaker
    timeline when it carries one, else none (diarization runs only when asked for).
    """
    if requested is SpeakerMode.AUTO:
        if has_tracks:
            return SpeakerMode.SEPARATE_STREAMS
        return SpeakerMode.TIMELINE if has_timeline else SpeakerMode.NONE
    if requested is SpeakerMode.SEPARATE_STREAMS and not has_tracks:
        raise InvalidInput(
            "the recording has no separate streams: upload one file per participant "
            "(with 'tracks'), or give a 'channels' or 'streams' map in its metadata",
            field="speakers",
        )
    if requested is SpeakerMode.TIMELINE and not has_timeline:
        raise InvalidInput(
            "the recording has no 'speaker_timeline' in its metadata", field="speakers"
        )
    if requested is SpeakerMode.DIARIZE and not can_diarize:
        raise InvalidInput(
            "offline diarization is not installed on this server: install the 'diarize' "
            "extra and 'pip install --no-deps resemblyzer==0.1.4'",
            field="speakers",
        )
    return requested
