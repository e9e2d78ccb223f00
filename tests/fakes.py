"""Fakes of postcall's own ports (never of the component under test)."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from postcall.domain import Segment, Word
from postcall.engines.base import EngineOptions, EngineResult
from postcall.errors import EngineError


class ScriptedEngine:
    """An ``Engine`` that 'hears' one word per second of non-silent audio.

    ``fail_on_call`` makes the n-th call (1-based) raise, to stand for a crash.
    """

    def __init__(self, *, fail_on_call: int | None = None, language: str = "en") -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.language = language
        self.seen_options: list[EngineOptions] = []
        self._lock = threading.Lock()

    def transcribe(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        with self._lock:
            self.calls += 1
            call = self.calls
        self.seen_options.append(options)
        if self.fail_on_call is not None and call == self.fail_on_call:
            raise EngineError(f"scripted failure on call {call}")
        seconds = len(audio) / 16000
        words = []
        for i in range(int(seconds)):
            block = audio[i * 16000 : (i + 1) * 16000]
            if block.size and float(np.abs(block).max()) > 0.01:
                words.append(Word(start=i + 0.1, end=i + 0.9, text=f"w{i}", probability=0.9))
        if not words:
            return EngineResult(language=self.language, segments=())
        segment = Segment(
            start=words[0].start,
            end=words[-1].end,
            text=" ".join(w.text for w in words),
            words=tuple(words),
        )
        return EngineResult(language=self.language, segments=(segment,))


class TimedEngine(ScriptedEngine):
    """A ScriptedEngine that takes a fixed time per call, and can kill its own process.

    Built in worker processes by ``timed_engine`` (POSTCALL_ENGINE_FACTORY) from:
    POSTCALL_TEST_ENGINE_SECONDS (time per chunk) and POSTCALL_TEST_POISON_SECONDS (a
    chunk of exactly this many seconds, to 0.01 s, SIGKILLs the process: a job that
    kills its worker every time).
    """

    def __init__(self, seconds: float, poison_s: float | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.poison_s = poison_s

    def transcribe(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        import os
        import signal
        import time

        if self.poison_s is not None and abs(len(audio) / 16000 - self.poison_s) < 0.01:
            os.kill(os.getpid(), signal.SIGKILL)
        deadline = time.monotonic() + self.seconds
        result = super().transcribe(audio, options)
        # Busy-free wait: the time this engine "computes".
        threading.Event().wait(max(0.0, deadline - time.monotonic()))
        return result


def timed_engine(settings: object) -> TimedEngine:
    import os

    poison = os.environ.get("POSTCALL_TEST_POISON_SECONDS")
    return TimedEngine(
        float(os.environ.get("POSTCALL_TEST_ENGINE_SECONDS", "0.1")),
        float(poison) if poison else None,
    )
