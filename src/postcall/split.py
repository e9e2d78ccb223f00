"""One long recording, many workers: planning it into units, and running one unit.

A unit is a stretch of one source (the recording, or a participant's track) that a
worker transcribes on its own: it seeks there, decodes only that stretch, and runs
the same chunked pipeline as a whole job does (``pipeline.transcribe_media``). Its
result is one ``ChunkResult`` under index ``source * SOURCE_STRIDE + unit``, kept
with the job's other chunk results, so the step that assembles the transcript is
the same whether the chunks came from one worker or many.

Planning costs a small fraction of one decode: a source of ``D`` seconds gets
``n = ceil(D / unit_s)`` units of about ``D / n`` (so a 60-minute recording makes 12
units of about 300 s, not 13 with a short tail), and boundary ``k`` is the quietest
moment within ``unit_s / 20`` of ``k * D / n``; only those windows are decoded (a
tenth of the audio). Units may thus run up to 10 % over ``unit_s``. The plan is
made once and kept in the store, so workers never need to agree on cut points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from postcall import audio
from postcall.engines.base import Engine, EngineOptions
from postcall.pipeline import (
    SOURCE_STRIDE,
    ChunkResult,
    Interrupted,
    Source,
    placed,
    transcribe_media,
)
from postcall.store.units import UnitPlan

WINDOW_SHARE = 0.1
"""A boundary is searched in a window of this share of ``unit_s`` around its ideal place."""


@dataclass(frozen=True)
class UnitSpec:
    """What a unit covers: ``source`` (its number) from ``start`` to ``end`` seconds.

    ``end`` None: to the end of the source's audio (which may differ from the probed
    duration a little).
    """

    source: int
    start: float
    end: float | None

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "start": self.start, "end": self.end})

    @classmethod
    def from_json(cls, raw: str) -> UnitSpec:
        data = json.loads(raw)
        end = data.get("end")
        return cls(int(data["source"]), float(data["start"]), None if end is None else float(end))


def should_split(sources: Sequence[Source], *, split_min_s: float, unit_s: float) -> bool:
    """Whether a job is worth sharing: more audio than ``split_min_s`` and than one unit."""
    total = sum(s.duration for s in sources)
    return total > split_min_s and (len(sources) > 1 or total > unit_s)


def plan(
    sources: Sequence[Source],
    open_media: Callable[[str], AbstractContextManager[Path]],
    *,
    unit_s: float,
    should_stop: Callable[[], bool] | None = None,
) -> list[UnitPlan]:
    """The units of a job, every source cut at silences into stretches of at most ``unit_s``."""
    units: list[UnitPlan] = []
    for n, source in enumerate(sources):
        with open_media(source.media_key) as path:
            bounds = _cuts(path, source, unit_s, should_stop)
        starts = [0.0, *bounds]
        ends: list[float | None] = [*bounds, None]
        units += [
            UnitPlan(n * SOURCE_STRIDE + k, UnitSpec(n, s, e).to_json())
            for k, (s, e) in enumerate(zip(starts, ends, strict=True))
        ]
    return units


def _cuts(
    path: Path, source: Source, unit_s: float, should_stop: Callable[[], bool] | None
) -> list[float]:
    count = math.ceil(source.duration / unit_s)
    spacing = source.duration / max(1, count)
    half = unit_s * WINDOW_SHARE / 2
    rate = audio.SAMPLE_RATE
    cuts: list[float] = []
    at = 0.0
    for k in range(1, count):
        if should_stop is not None and should_stop():
            raise Interrupted()
        lo = max(at, k * spacing - half)
        blocks = list(
            audio.decode(
                path,
                stream_index=source.stream_index,
                channel=source.channel,
                start=lo,
                end=k * spacing + half,
            )
        )
        window = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if window.size < half * rate:
            break  # the audio ends sooner than its probed duration said
        at = round(lo * rate + audio.quietest_cut(window)) / rate
        cuts.append(at)
    return cuts


def unit_chunk_s(chunk_max_s: float, unit_s: float) -> float:
    """Longest chunk inside a unit: a unit is one chunk when chunks may be as long as
    units (it may be up to 10 % longer than ``unit_s``), else ``chunk_max_s``."""
    return unit_s * (1 + WINDOW_SHARE) if chunk_max_s >= unit_s else chunk_max_s


def transcribe_unit(
    index: int,
    spec: UnitSpec,
    source: Source,
    path: Path,
    engine: Engine,
    options: EngineOptions,
    *,
    chunk_max_s: float,
    concurrency: int = 1,
    should_stop: Callable[[], bool] | None = None,
    max_s: float | None = None,
) -> ChunkResult:
    """Transcribe one unit; its chunks' results joined into one, on the source's timeline.

    ``max_s`` limits the recording's timeline, as in ``transcribe_sources``: the last
    unit (``end`` None) stops with ``DurationExceeded`` if the file grew past it."""
    chunks = transcribe_media(
        path,
        engine,
        options,
        duration=source.duration,
        chunk_max_s=chunk_max_s,
        concurrency=concurrency,
        stream_index=source.stream_index,
        channel=source.channel,
        start=spec.start,
        end=spec.end,
        should_stop=should_stop,
        max_s=None if max_s is None else max(0.0, max_s - source.offset),
    )
    speech: dict[str, float] = {}
    for c in chunks:
        if c.segments:
            spoken = sum(s.end - s.start for s in c.segments)
            speech[c.language] = speech.get(c.language, 0.0) + spoken
    language = max(speech, key=lambda k: speech[k]) if speech else (options.language or "")
    end = spec.end if spec.end is not None else (chunks[-1].end if chunks else spec.start)
    return ChunkResult(
        index=index,
        start=spec.start,
        end=end,
        language=language,
        segments=tuple(s for c in chunks for s in c.segments),
    )


def kept_results(raw: Mapping[int, str], sources: Sequence[Source]) -> list[ChunkResult]:
    """The kept chunk results of a split job, placed on the recording's timeline."""
    return [
        placed(ChunkResult.from_json(payload), sources[index // SOURCE_STRIDE])
        for index, payload in sorted(raw.items())
    ]
