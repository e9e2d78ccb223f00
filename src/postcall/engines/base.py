"""The engine port: audio in, timed segments out. Engines never format output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from postcall.domain import Segment


@dataclass(frozen=True)
class EngineOptions:
    """Per-call decoding options. ``language`` None means detect it."""

    language: str | None = "en"
    beam_size: int = 5
    vad: bool = True
    word_timestamps: bool = True
    prompt: str | None = None
    """Initial prompt: vocabulary and style for the first window."""


@dataclass(frozen=True)
class EngineResult:
    """Segments with times relative to the start of the audio passed in."""

    language: str
    segments: tuple[Segment, ...]


class Engine(Protocol):
    """Transcribes one piece of 16 kHz mono float32 audio."""

    def transcribe(self, audio: npt.NDArray[np.float32], options: EngineOptions) -> EngineResult:
        """Transcribe ``audio``; raise ``EngineError`` or ``ModelUnavailable`` on failure."""
        ...


@runtime_checkable
class Loadable(Protocol):
    """An engine that holds a model in this process and can load it ahead of use."""

    def load(self) -> Any:
        """Load the model now (once); raise ``ModelUnavailable`` when it cannot be."""
        ...


@runtime_checkable
class Parallel(Protocol):
    """An engine that transcribes several chunks of one job at once to best effect."""

    @property
    def parallelism(self) -> int:
        """How many chunks of one job to keep in flight."""
        ...


def chunks_at_once(engine: Engine) -> int:
    """Chunks of one job to give ``engine`` at once: its ``parallelism``, else 1."""
    return max(1, engine.parallelism) if isinstance(engine, Parallel) else 1
