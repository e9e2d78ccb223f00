"""One transcription, start to end, in bounded memory.

The media is decoded lazily and split at silences into chunks of at most
``chunk_max_s``; each chunk is transcribed on its own and its result handed to
``on_chunk`` (the worker keeps it in the store), so a job that is run again after a
crash skips the chunks it already has. Memory holds one chunk at a time, whatever
the recording's length. Chunk boundaries depend only on the audio, so the indices
of a second run match the first.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from postcall import audio
from postcall.domain import Participant, Segment, TranscriptDocument, Word, label_segments
from postcall.engines.base import Engine, EngineOptions
from postcall.errors import NoSpeech

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised between chunks when the caller asked the pipeline to stop."""


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's segments, with times from the start of the recording."""

    index: int
    start: float
    end: float
    language: str
    segments: tuple[Segment, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "start": self.start,
                "end": self.end,
                "language": self.language,
                "segments": [_segment_dict(s) for s in self.segments],
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str) -> ChunkResult:
        data = json.loads(raw)
        return cls(
            index=int(data["index"]),
            start=float(data["start"]),
            end=float(data["end"]),
            language=str(data["language"]),
            segments=tuple(_segment_from(s) for s in data["segments"]),
        )


# Chunks a transcription holds at once, done or being transcribed, per chunk it may
# have in flight.
HELD_PER_SLOT = 3


def transcribe_media(
    path: str | Path,
    engine: Engine,
    options: EngineOptions,
    *,
    duration: float,
    chunk_max_s: float = 30.0,
    concurrency: int = 1,
    stream_index: int | None = None,
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
    done: Mapping[int, ChunkResult] | None = None,
    on_chunk: Callable[[ChunkResult, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_s: float | None = None,
) -> list[ChunkResult]:
    """Transcribe a media file chunk by chunk; return every chunk's result in order.

    ``start`` and ``end`` (seconds) limit it to that stretch (chunk times stay on the
    file's timeline).

    ``done`` holds results of an earlier run (by chunk index); those chunks are not
    transcribed again. ``on_chunk(result, progress)`` is called after each chunk, in
    order, with the fraction of the recording covered so far. ``should_stop`` is
    polled between chunks; when it answers True the run stops with ``Interrupted``.
    ``concurrency`` > 1 keeps that many chunks being transcribed at once (for an
    engine that decodes several in parallel, or a remote one that serves requests in
    parallel): when one finishes the next starts, even while an earlier one is still
    running (its result waits, and results are handed on in order). Memory stays
    bounded: at most ``HELD_PER_SLOT`` times ``concurrency`` chunks are held, done or
    not. ``max_s``: decoding stops with ``DurationExceeded`` when the file's audio runs
    past it (``audio.decode``).
    """
    done = done or {}
    results: list[ChunkResult] = []
    chunks: Iterable[audio.Chunk] = audio.split_at_silences(
        audio.decode(
            path,
            stream_index=stream_index,
            channel=channel,
            start=start,
            end=end,
            max_s=max_s,
        ),
        max_chunk_s=chunk_max_s,
        min_chunk_s=chunk_max_s / 3,
    )
    if start > 0:
        chunks = (replace(c, start=start + c.start) for c in chunks)
    at_once = max(1, concurrency)
    # (where the chunk ends, s; its result): the chunk itself (its audio) is not kept.
    held: deque[tuple[float, Future[ChunkResult]]] = deque()

    def hand_on_finished() -> None:
        """Hand on, in order, the results that are ready."""
        while held and held[0][1].done():
            chunk_end, future = held.popleft()
            result = future.result()
            results.append(result)
            if on_chunk is not None:
                progress = min(chunk_end / duration, 0.99) if duration > 0 else 0.0
                on_chunk(result, progress)

    def running() -> list[Future[ChunkResult]]:
        return [f for _, f in held if not f.done()]

    with ThreadPoolExecutor(at_once, thread_name_prefix="chunk") as pool:
        try:
            for chunk in chunks:
                if should_stop is not None and should_stop():
                    raise Interrupted()
                previous = done.get(chunk.index)
                future: Future[ChunkResult]
                if previous is not None and abs(previous.start - chunk.start) < 1e-3:
                    future = Future()
                    future.set_result(previous)
                else:
                    future = pool.submit(transcribe_chunk, engine, chunk, options)
                held.append((chunk.end, future))
                hand_on_finished()
                while held and (len(running()) >= at_once or len(held) >= HELD_PER_SLOT * at_once):
                    wait(running() or [held[0][1]], return_when=FIRST_COMPLETED)
                    hand_on_finished()
            while held:
                wait([held[0][1]])
                hand_on_finished()
        finally:
            for _, pending in held:
                pending.cancel()
    return results


# When no 100 ms stretch of a chunk is louder than this (about -60 dBFS), the chunk is
# taken as silence without asking the engine: a participant's own track is silent most
# of the time. Loudest stretch, not the mean: one short utterance in five quiet
# minutes must still be heard.
SILENCE_RMS = 1e-3
_FRAME = 1600


def _silent(samples: npt.NDArray[np.float32]) -> bool:
    if not samples.size:
        return True
    usable = samples[: samples.size - samples.size % _FRAME] if samples.size >= _FRAME else samples
    frames = usable.reshape(-1, min(_FRAME, usable.size))
    loudest = float(np.sqrt(np.max(np.mean(frames.astype(np.float64) ** 2, axis=1))))
    tail = samples[usable.size :]
    if tail.size:
        loudest = max(loudest, float(np.sqrt(np.mean(tail.astype(np.float64) ** 2))))
    return loudest < SILENCE_RMS


@dataclass(frozen=True)
class Source:
    """One piece of audio to transcribe: the whole recording, or a participant's track."""

    media_key: str
    duration: float
    offset: float = 0.0
    stream_index: int | None = None
    channel: int | None = None
    speaker: str | None = None


# Chunk results of source n are kept under indices n * SOURCE_STRIDE + chunk index.
SOURCE_STRIDE = 1_000_000


def transcribe_sources(
    sources: Sequence[Source],
    open_media: Callable[[str], AbstractContextManager[Path]],
    engine: Engine,
    options: EngineOptions,
    *,
    chunk_max_s: float = 30.0,
    concurrency: int = 1,
    done: Mapping[int, ChunkResult] | None = None,
    on_chunk: Callable[[ChunkResult, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_s: float | None = None,
) -> list[ChunkResult]:
    """Transcribe each source on its own; segments come back on the recording's timeline,
    labelled with their source's speaker. Progress spans all sources by duration.
    ``max_s`` limits the recording's timeline (a source's offset counts against it)."""
    done = done or {}
    total = sum(s.duration for s in sources) or 1.0
    results: list[ChunkResult] = []
    covered = 0.0
    for n, source in enumerate(sources):
        base = n * SOURCE_STRIDE
        mine = {i - base: c for i, c in done.items() if base <= i < base + SOURCE_STRIDE}

        def relay(
            chunk: ChunkResult, _fraction: float, base: int = base, covered: float = covered
        ) -> None:
            if on_chunk is not None:
                progress = min((covered + chunk.end) / total, 0.99)
                on_chunk(replace(chunk, index=base + chunk.index), progress)

        with open_media(source.media_key) as path:
            chunks = transcribe_media(
                path,
                engine,
                options,
                duration=source.duration,
                chunk_max_s=chunk_max_s,
                concurrency=concurrency,
                stream_index=source.stream_index,
                channel=source.channel,
                done=mine,
                on_chunk=relay,
                should_stop=should_stop,
                max_s=None if max_s is None else max(0.0, max_s - source.offset),
            )
        covered += source.duration
        results.extend(placed(replace(c, index=base + c.index), source) for c in chunks)
    return results


def placed(chunk: ChunkResult, source: Source) -> ChunkResult:
    """A source's chunk result moved onto the recording's timeline, with its speaker."""
    segments = tuple(
        replace(s.shifted(source.offset), speaker=source.speaker) for s in chunk.segments
    )
    return replace(chunk, segments=segments)


def transcribe_chunk(engine: Engine, chunk: audio.Chunk, options: EngineOptions) -> ChunkResult:
    """Transcribe one chunk and move its times onto the recording's timeline."""
    if _silent(chunk.audio):
        return ChunkResult(chunk.index, chunk.start, chunk.end, options.language or "", ())
    engine_result = engine.transcribe(chunk.audio, options)
    segments = tuple(
        _clamp(s.shifted(chunk.start), chunk.start, chunk.end)
        for s in engine_result.segments
        if s.text
    )
    return ChunkResult(
        index=chunk.index,
        start=chunk.start,
        end=chunk.end,
        language=engine_result.language,
        segments=segments,
    )


def assemble(
    chunks: Iterable[ChunkResult],
    *,
    transcription_id: str,
    recording_id: str,
    duration: float,
    speaker: str,
    participants: tuple[Participant, ...] = (),
    language_hint: str | None = None,
    attribute: Callable[[tuple[Segment, ...]], tuple[Segment, ...]] | None = None,
    started_at: datetime | None = None,
) -> TranscriptDocument:
    """Join chunk results into the transcript document; ``NoSpeech`` when there is none.

    ``attribute`` assigns speakers to the time-ordered segments; any segment left
    without one is ``speaker``'s.
    """
    segments: list[Segment] = []
    speech_by_language: dict[str, float] = {}
    for chunk in sorted(chunks, key=lambda c: c.index):
        segments.extend(chunk.segments)
        spoken = sum(s.end - s.start for s in chunk.segments)
        speech_by_language[chunk.language] = speech_by_language.get(chunk.language, 0.0) + spoken
    if not segments:
        raise NoSpeech("no speech was found in the recording")
    # A multilingual meeting reports the language spoken the longest.
    language = max(speech_by_language, key=lambda k: speech_by_language[k], default=None)
    ordered = tuple(sorted(segments, key=lambda s: (s.start, s.end)))
    if attribute is not None:
        ordered = attribute(ordered)
    return TranscriptDocument(
        transcription_id=transcription_id,
        recording_id=recording_id,
        language=language or language_hint or "en",
        duration=duration,
        segments=label_segments(ordered, speaker),
        participants=participants,
        started_at=started_at,
    )


def _clamp(segment: Segment, lo: float, hi: float) -> Segment:
    """Keep a segment's times inside its chunk (the model sometimes runs past the end)."""

    def c(t: float) -> float:
        return round(min(max(t, lo), hi), 3)

    words = tuple(
        Word(start=c(w.start), end=c(w.end), text=w.text, probability=w.probability)
        for w in segment.words
    )
    return Segment(
        start=c(segment.start),
        end=c(segment.end),
        text=segment.text,
        words=words,
        speaker=segment.speaker,
    )


def _segment_dict(s: Segment) -> dict[str, Any]:
    return {
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "speaker": s.speaker,
        "words": [[w.start, w.end, w.text, w.probability] for w in s.words],
    }


def _segment_from(d: Mapping[str, Any]) -> Segment:
    return Segment(
        start=float(d["start"]),
        end=float(d["end"]),
        text=str(d["text"]),
        speaker=d.get("speaker"),
        words=tuple(
            Word(start=float(w[0]), end=float(w[1]), text=str(w[2]), probability=float(w[3]))
            for w in d["words"]
        ),
    )
