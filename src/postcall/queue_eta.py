"""Where a transcription stands in the queue, and about when it will be done.

Pure arithmetic over facts the store keeps (``postcall.store.edits``): the job's queue
position, how many jobs run now, and the speed of recent jobs (worker seconds per
second of audio). With no recent job to go by, the estimate is None: honest, not made up.

- processing: the rest of its own audio at the recent speed
  (``duration × rate × (1 − progress)``).
- queued at position ``p``: the jobs ahead of it, spread over the busy workers (at
  least one), each taking the recent mean job time, plus half a mean job for what is
  running now, then its own audio at the recent speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postcall.store.edits import Run

RUNS_CONSIDERED = 20
"""How many recent runs the estimate goes by."""


@dataclass(frozen=True)
class Speed:
    """Recent jobs' pace: worker seconds per audio second, and the mean job's seconds."""

    rate: float
    mean_job_s: float


def speed_of(runs: Sequence[Run]) -> Speed | None:
    """The pace of ``runs``; None without a run that had audio."""
    usable = [r for r in runs if r.audio_s > 0 and r.elapsed_s >= 0]
    if not usable:
        return None
    audio = sum(r.audio_s for r in usable)
    elapsed = sum(r.elapsed_s for r in usable)
    return Speed(rate=elapsed / audio, mean_job_s=elapsed / len(usable))


def eta_processing(speed: Speed | None, duration_s: float, progress: float) -> float | None:
    """Seconds until a running job of ``duration_s`` seconds at ``progress`` is done."""
    if speed is None:
        return None
    return max(0.0, duration_s * speed.rate * (1.0 - min(max(progress, 0.0), 1.0)))


def eta_queued(
    speed: Speed | None, duration_s: float, position: int, processing: int
) -> float | None:
    """Seconds until the job at queue ``position`` (1 = next) is done."""
    if speed is None:
        return None
    workers = max(1, processing)
    ahead = (position - 1) + 0.5 * processing
    return ahead / workers * speed.mean_job_s + duration_s * speed.rate
