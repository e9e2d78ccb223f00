"""The store port's chunk units: one long recording's work shared by many workers.

A worker that claims a long job plans it into units (stretches of the recording,
each transcribed on its own) and ``publish_units`` them: that is fenced by the job's
lease, idempotent, and *parks* the job (still ``processing``, no lease, not
claimable). Any worker then claims a unit under its own lease with ``claim_work``,
renews it with ``heartbeat_unit``, and ends it with ``complete_unit`` (which keeps
the unit's chunk result with the job's other chunk results, and counts progress).
Completing the last unit hands the job's lease to that worker, which assembles the
transcript from the kept chunk results at once, ahead of any other work.

A unit whose lease expires goes back to pending (its late result is refused); one
claimed ``max_attempts`` times fails its whole job with ``worker_lost``, and
``fail_unit`` fails the job with the unit's error. Units of a job that ended or was
deleted are gone: their workers' heartbeats are refused.

``claim_work`` schedules fairly across transcriptions: every claimable item (a
queued job, an expired job, or a pending unit) belongs to a transcription, and the
one taken is of the transcription with the fewest units in flight, then the one
served least recently (a queued job counts as served when it was queued). A short
job queued behind a long recording's units therefore waits for no more than the
units already running, and two long recordings share the workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from postcall.domain import Transcription, TranscriptionError


class UnitStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"


class UnitOutcome(StrEnum):
    """What ``complete_unit`` did."""

    LOST = "lost"
    """The worker no longer held the unit (lease expired, job ended or deleted)."""
    DONE = "done"
    """Kept; other units of the job remain."""
    LAST = "last"
    """Kept, and it was the job's last: the job is now leased to this worker."""


@dataclass(frozen=True)
class UnitPlan:
    """One unit as published: its index (the chunk index of its result) and spec."""

    index: int
    spec: str
    """Opaque to the store (the worker's JSON: which source, from when to when)."""


@dataclass(frozen=True)
class Unit:
    """A published unit's state."""

    transcription_id: str
    index: int
    spec: str
    status: UnitStatus
    attempts: int
    lease_owner: str | None = None


@dataclass(frozen=True)
class UnitClaim:
    """A claimed unit, with its (parked) job's record."""

    unit: Unit
    job: Transcription


WORKER_LOST_MESSAGE = (
    "a chunk of the recording was claimed {attempts} times and its worker stopped "
    "each time; it is not retried again"
)


class UnitStore(Protocol):
    """Chunk units (see the module docstring); both backends implement it."""

    def publish_units(
        self, transcription_id: str, worker_id: str, units: Sequence[UnitPlan]
    ) -> bool:
        """Add the job's units and park the job; False unless ``worker_id`` holds its lease.

        Idempotent: when the job already has units they are kept as they are.
        """
        ...

    def claim_work(
        self, worker_id: str, *, lease_s: float, max_attempts: int
    ) -> Transcription | UnitClaim | None:
        """Take the next job or unit, fairly across transcriptions; None when there is none.

        Expired units go back to pending first (or fail their job with ``worker_lost``
        after ``max_attempts`` claims); jobs are claimed as ``claim`` does.
        """
        ...

    def heartbeat_unit(
        self, transcription_id: str, index: int, worker_id: str, *, lease_s: float
    ) -> bool:
        """Renew a unit's lease; False when the worker no longer holds it."""
        ...

    def complete_unit(
        self,
        transcription_id: str,
        index: int,
        worker_id: str,
        payload: str,
        *,
        lease_s: float,
    ) -> UnitOutcome:
        """Keep the unit's chunk result (``payload``, as ``save_chunk``) and mark it done.

        The job's progress becomes the share of its units done. When it was the last
        unit, the job is leased to ``worker_id`` for ``lease_s`` (``LAST``).
        """
        ...

    def fail_unit(
        self, transcription_id: str, index: int, worker_id: str, error: TranscriptionError
    ) -> bool:
        """Fail the unit's whole job with ``error``; False unless ``worker_id`` holds the unit."""
        ...

    def release_unit(self, transcription_id: str, index: int, worker_id: str) -> bool:
        """Give a claimed unit back without counting the attempt."""
        ...

    def list_units(self, transcription_id: str) -> list[Unit]:
        """The job's units by index; empty when it has none (or has ended)."""
        ...


# Progress of a split job: units done count up to this; assembly takes the rest.
UNITS_PROGRESS = 0.98
