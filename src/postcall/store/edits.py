"""The store port's edits and queue facts, for people watching their transcriptions.

- ``update_recording_metadata``: a recording's metadata replaced (participants renamed).
- ``retry_transcription``: a failed transcription queued again under the same id, its
  attempts reset (it keeps its place among the recording's transcriptions, so it takes
  none of the others'); it ends with ``transcript.done``/``failed`` as usual.
- ``queue_position`` and ``processing_count``: where a queued job stands.
- ``record_run`` and ``recent_runs``: how fast recent jobs went (audio seconds and the
  seconds a worker took), kept for the queue's estimates; the last ``KEPT_RUNS`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from postcall.domain import Recording, Transcription
from postcall.errors import Conflict

KEPT_RUNS = 50
"""How many recent runs the store keeps."""


@dataclass(frozen=True)
class Run:
    """One finished job: how much audio, and how long its worker took (seconds)."""

    audio_s: float
    elapsed_s: float


def not_failed(transcription_id: str, status: str) -> Conflict:
    return Conflict(
        f"transcription {transcription_id!r} is {status}; only a failed transcription "
        "can be retried",
        code="not_failed",
    )


class EditStore(Protocol):
    """Edits of records and facts about the queue."""

    def update_recording_metadata(
        self, tenant: str, recording_id: str, metadata: Mapping[str, Any]
    ) -> Recording:
        """Replace the recording's metadata; return it updated (``NotFound`` if absent)."""
        ...

    def retry_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        """Queue a failed transcription again at the back of the queue: attempts,
        progress, error and lease cleared, any chunk units dropped (kept chunk results
        stay, so it resumes). ``NotFound``; ``Conflict`` (``not_failed``) unless failed."""
        ...

    def queue_position(self, transcription_id: str) -> int | None:
        """1 for the next queued job to be claimed, 2 for the one after…; None when the
        job is not queued."""
        ...

    def processing_count(self) -> int:
        """Jobs being processed now under a live lease (about how many workers are busy)."""
        ...

    def record_run(self, audio_s: float, elapsed_s: float) -> None:
        """Keep one finished job's speed (the oldest beyond ``KEPT_RUNS`` are dropped)."""

    def recent_runs(self, limit: int) -> list[Run]:
        """Up to ``limit`` recent runs, newest first."""
        ...
