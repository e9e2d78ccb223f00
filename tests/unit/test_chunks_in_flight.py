"""``transcribe_media`` with several chunks in flight: a slow chunk does not hold up the
ones after it, and results are still handed on in order."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from postcall.engines.base import EngineOptions, EngineResult
from postcall.pipeline import transcribe_media
from tests import media
from tests.fakes import ScriptedEngine
from tests.unit.test_worker import speechy


class SlowFirst(ScriptedEngine):
    """The first chunk takes until two later chunks have finished (or a deadline)."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = 0
        self.overtaken = False
        self._change = threading.Condition()

    def transcribe(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        with self._change:
            first = self.calls == 0
        result = super().transcribe(audio, options)
        with self._change:
            if first:
                self.overtaken = self._change.wait_for(lambda: self.finished >= 2, timeout=10)
            self.finished += 1
            self._change.notify_all()
        return result


def test_a_slow_chunk_does_not_hold_up_the_next_ones(tmp_path: Path) -> None:
    wav = media.write_audio(tmp_path / "a.wav", speechy(150))
    engine = SlowFirst()
    seen: list[tuple[float, float]] = []
    results = transcribe_media(
        wav,
        engine,
        EngineOptions(),
        duration=150.0,
        chunk_max_s=30,
        concurrency=2,
        on_chunk=lambda result, progress: seen.append((result.start, progress)),
    )
    assert engine.overtaken  # chunks 1 and 2 finished while chunk 0 was still running
    assert len(results) == engine.calls >= 5
    starts = [r.start for r in results]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert [s for s, _ in seen] == starts  # handed on in order
    progress = [p for _, p in seen]
    assert progress == sorted(progress)


def test_one_at_a_time_is_the_same_transcript(tmp_path: Path) -> None:
    wav = media.write_audio(tmp_path / "a.wav", speechy(150))
    kwargs = {"duration": 150.0, "chunk_max_s": 30}
    one = transcribe_media(wav, ScriptedEngine(), EngineOptions(), concurrency=1, **kwargs)  # type: ignore[arg-type]
    three = transcribe_media(wav, ScriptedEngine(), EngineOptions(), concurrency=3, **kwargs)  # type: ignore[arg-type]
    assert [(r.start, r.end, r.segments) for r in one] == [
        (r.start, r.end, r.segments) for r in three
    ]
