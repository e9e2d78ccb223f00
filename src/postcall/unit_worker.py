"""The worker's side of shared recordings: planning a job into units, running a unit.

``UnitWork`` is a part of ``Worker`` (see ``postcall.worker``); the planning and the
transcription of one unit are in ``postcall.split``, the store's side in
``postcall.store.units``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import Counter

from postcall import split
from postcall.blobs.base import BlobStore
from postcall.domain import (
    Recording,
    SpeakerMode,
    Transcription,
    TranscriptionError,
    recording_tracks,
)
from postcall.engines.base import Engine, EngineOptions, chunks_at_once
from postcall.errors import NotFound, PostcallError, Unavailable
from postcall.outages import Outage, until_available
from postcall.pipeline import ChunkResult, Interrupted, Source
from postcall.store.base import Store
from postcall.store.units import (
    UNITS_PROGRESS,
    Unit,
    UnitClaim,
    UnitOutcome,
    UnitPlan,
    UnitStatus,
)

if TYPE_CHECKING:
    from postcall.worker import WorkerConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

UNITS = Counter("postcall_units_total", "Chunk units finished by this process", ["outcome"])


class Heartbeat(threading.Thread):
    """Renews a lease until stopped; remembers when the lease was lost.

    For a job, ``renew`` is None and the job's lease is renewed with ``progress``;
    for a unit, ``renew`` renews the unit's lease.
    """

    def __init__(
        self,
        store: Store,
        job_id: str,
        worker_id: str,
        lease_s: float,
        renew: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self._store, self._job_id, self._worker_id = store, job_id, worker_id
        self._lease_s = lease_s
        self._renew = renew
        self._stop = threading.Event()
        self.progress = 0.0
        self.lost = False
        self._outage = Outage(f"heartbeat of {job_id}", log)

    def beat(self) -> None:
        if self._renew is not None:
            alive = self._renew()
        else:
            alive = self._store.heartbeat(
                self._job_id, self._worker_id, progress=self.progress, lease_s=self._lease_s
            )
        if not alive:
            self.lost = True

    def run(self) -> None:
        while not self._stop.wait(self._lease_s / 3) and not self.lost:
            try:
                self.beat()
            except Unavailable as exc:  # logged once; the next beat tries again
                self._outage.failed(exc)
                continue
            except Exception:  # a store hiccup must not kill the heartbeat
                log.exception("heartbeat for %s failed", self._job_id)
            self._outage.recovered()

    def stop(self) -> None:
        self._stop.set()


def sources_of(recording: Recording, job: Transcription) -> list[Source]:
    """What a job transcribes: each participant's track, or the whole recording."""
    if job.options.speakers is SpeakerMode.SEPARATE_STREAMS:
        return [
            Source(t.media_key, t.duration, t.offset, t.stream_index, t.channel, t.participant_id)
            for t in recording_tracks(recording)
        ]
    return [Source(recording.media_key, recording.media.duration)]


class UnitWork:
    """Split jobs and chunk units, for ``Worker``."""

    store: Store
    blobs: BlobStore
    engine: Engine
    config: WorkerConfig
    worker_id: str
    on_publish: Callable[[], None] | None
    _stop: threading.Event

    outage: Outage

    def _durable(self, call: Callable[[], T]) -> T:
        """``call()`` (a store write that records finished work), repeated through an
        outage until the store answers or the worker is stopped."""
        return until_available(call, self.outage, self._stop)

    def _give_back(self, release: Callable[[], bool], what: str) -> None:
        """Release ``what`` once the store answers (a release is not an attempt); when
        stopped first, its lease runs out and another worker takes it then."""
        try:
            if self._durable(release):
                log.info("%s released (a backend did not answer)", what)
        except Unavailable:
            log.warning("%s stays claimed until its lease ends (the store does not answer)", what)

    def _split(
        self, job: Transcription, sources: list[Source], units: list[Unit], heartbeat: Heartbeat
    ) -> list[ChunkResult] | None:
        """A shared job: its chunk results when every unit is done, else None once the
        units are published (the job is parked until the last one completes)."""
        if units and all(u.status is UnitStatus.DONE for u in units):
            raw = self.store.load_chunks(job.id)
            missing = [u.index for u in units if u.index not in raw]
            if missing:
                raise RuntimeError(f"units {missing} are done but their results are missing")
            heartbeat.progress = max(heartbeat.progress, UNITS_PROGRESS)
            heartbeat.beat()
            log.info("job %s: assembling %d units", job.id, len(units))
            return split.kept_results({u.index: raw[u.index] for u in units}, sources)
        plan = [UnitPlan(u.index, u.spec) for u in units] or split.plan(
            sources,
            self.blobs.local_file,
            unit_s=self.config.unit_s,
            should_stop=lambda: self._stop.is_set() or heartbeat.lost,
        )
        if not self._durable(lambda: self.store.publish_units(job.id, self.worker_id, plan)):
            heartbeat.lost = True
            raise Interrupted()
        log.info("job %s: %d units published", job.id, len(plan))
        if self.on_publish is not None:
            self.on_publish()
        return None

    def process_unit(self, claim: UnitClaim) -> Transcription | None:
        """Run one unit; return its job when this was the job's last unit (now ours)."""
        unit, job = claim.unit, claim.job
        started = time.monotonic()
        config = self.config

        def renew() -> bool:
            return self.store.heartbeat_unit(
                job.id, unit.index, self.worker_id, lease_s=config.lease_s
            )

        heartbeat = Heartbeat(self.store, job.id, self.worker_id, config.lease_s, renew)
        heartbeat.start()
        outcome, handed = "done", None
        outage: Unavailable | None = None
        try:
            spec = split.UnitSpec.from_json(unit.spec)
            recording = self.store.get_recording(job.tenant, job.recording_id)
            source = sources_of(recording, job)[spec.source]
            options = EngineOptions(
                language=job.options.language,
                beam_size=config.beam_size,
                prompt=job.options.prompt,
            )
            with self.blobs.local_file(source.media_key) as path:
                result = split.transcribe_unit(
                    unit.index,
                    spec,
                    source,
                    path,
                    self.engine,
                    options,
                    chunk_max_s=split.unit_chunk_s(config.chunk_max_s, config.unit_s),
                    concurrency=chunks_at_once(self.engine),
                    should_stop=lambda: self._stop.is_set() or heartbeat.lost,
                    max_s=config.max_duration_s,
                )
            payload = result.to_json()
            ended = self._durable(
                lambda: self.store.complete_unit(
                    job.id, unit.index, self.worker_id, payload, lease_s=config.lease_s
                )
            )
            if ended is UnitOutcome.LOST:
                outcome = "abandoned"
                log.warning("unit %s#%d: lease lost before completion", job.id, unit.index)
            elif ended is UnitOutcome.LAST:
                handed = self._durable(lambda: self.store.get_transcription(job.tenant, job.id))
        except NotFound:
            outcome = "abandoned"  # deleted meanwhile
        except Interrupted:
            outcome = "released"
            try:
                if not heartbeat.lost and self.store.release_unit(
                    job.id, unit.index, self.worker_id
                ):
                    log.info("unit %s#%d released (worker stopping)", job.id, unit.index)
            except Unavailable:
                pass  # stopping during an outage: the lease runs out instead
        except Unavailable as exc:
            # Not the unit's fault: it goes back to the queue once the store answers.
            outcome, outage = "released", exc
            self._give_back(
                lambda: self.store.release_unit(job.id, unit.index, self.worker_id),
                f"unit {job.id}#{unit.index}",
            )
        except PostcallError as exc:
            outcome = "failed"
            log.info("unit %s#%d failed: %s", job.id, unit.index, exc)
            error = TranscriptionError(exc.code, exc.message)
            self._durable(lambda: self.store.fail_unit(job.id, unit.index, self.worker_id, error))
        except Exception as exc:
            outcome = "failed"
            log.exception("unit %s#%d crashed", job.id, unit.index)
            crash = TranscriptionError("internal_error", f"{exc}")
            self._durable(lambda: self.store.fail_unit(job.id, unit.index, self.worker_id, crash))
        finally:
            heartbeat.stop()
        UNITS.labels(outcome).inc()
        log.info(
            "unit %s#%d %s in %.1f s (attempt %d)",
            job.id,
            unit.index,
            outcome,
            time.monotonic() - started,
            unit.attempts,
        )
        if outage is not None:
            raise outage  # the run loop backs off before claiming again
        return handed
