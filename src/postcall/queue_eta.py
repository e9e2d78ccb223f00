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

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
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


class QueueFacts:
    """The queue's slow-moving facts, kept a moment so that status polls stay cheap.

    Every client polls its job every few seconds; each poll of a queued job would
    otherwise read the recent runs and count the running jobs again (two more store
    round trips), and its recording's length. The pace and the running count are kept
    for ``ttl_s`` (an estimate a second old is as good), the lengths of the last
    ``max_lengths`` recordings for good (a recording's audio never changes)."""

    def __init__(
        self,
        ttl_s: float = 1.0,
        max_lengths: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_lengths = max_lengths
        self._clock = clock
        self._lock = threading.Lock()
        self._facts: tuple[float, Speed | None, int] | None = None
        self._lengths: OrderedDict[tuple[str, str], float] = OrderedDict()

    def pace(
        self, runs: Callable[[int], Sequence[Run]], processing: Callable[[], int]
    ) -> tuple[Speed | None, int]:
        """The recent pace and how many jobs run now, read at most once per ``ttl_s``."""
        now = self._clock()
        with self._lock:
            facts = self._facts
        if facts is not None and now - facts[0] < self.ttl_s:
            return facts[1], facts[2]
        speed, running = speed_of(runs(RUNS_CONSIDERED)), processing()
        with self._lock:
            self._facts = (now, speed, running)
        return speed, running

    def length(self, where: tuple[str, str], read: Callable[[], float]) -> float:
        """The audio length of the recording ``where`` (tenant, id), read once."""
        with self._lock:
            if where in self._lengths:
                self._lengths.move_to_end(where)
                return self._lengths[where]
        seconds = read()
        with self._lock:
            self._lengths[where] = seconds
            while len(self._lengths) > self.max_lengths:
                self._lengths.popitem(last=False)
        return seconds
