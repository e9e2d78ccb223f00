"""The worker: claims jobs (and chunk units) from the store and runs the pipeline on them.

A worker runs one job or unit at a time. While it runs, a heartbeat thread renews
its lease (and records progress) every third of a lease; if the heartbeat is refused
(the lease was lost, or the transcription was deleted) the work stops at the next
chunk and its result is dropped. A failing job never stops the worker.
``burst=True`` drains the queue and returns, for tests and batch use.

A job with more audio than ``split_min_s`` is shared: the worker that claims it
plans it into units of up to ``unit_s`` (``postcall.split``), publishes them and
parks the job; any worker then claims units; the one that completes the last unit
assembles the transcript from the kept chunk results (the same path a resumed job
takes).

When the store or the blob store does not answer (``Unavailable``), the worker keeps
what it holds: the writes that record finished work (a chunk's result, a completion, a
failure) are repeated until the store answers again; a job that cannot go on (its
media cannot be read) is released, not failed, once the store answers, and the worker
backs off (``postcall.outages``), logging the outage once, until claims work again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from prometheus_client import Counter, Histogram

from postcall import audio, decode_child, formats, split
from postcall.blobs.base import BlobStore
from postcall.domain import (
    Participant,
    Recording,
    Segment,
    SpeakerMode,
    Transcription,
    TranscriptionError,
    TranscriptionResult,
    VoiceprintNote,
    default_speaker,
    new_id,
    participants_from_metadata,
    started_at_from_metadata,
    timeline_from_metadata,
)
from postcall.engines.base import Engine, EngineOptions, Loadable, chunks_at_once
from postcall.errors import (
    DurationExceeded,
    NotFound,
    PostcallError,
    StoreUnavailable,
    Unavailable,
)
from postcall.outages import Outage
from postcall.pipeline import ChunkResult, Interrupted, Source, assemble, transcribe_sources
from postcall.retention import Sweeper
from postcall.service import document_key
from postcall.speakers import attribution as speakers
from postcall.speakers.embedding import SpeakerEmbedder, load_embedder
from postcall.store.base import Store
from postcall.store.units import (
    UnitClaim,
)
from postcall.unit_worker import Heartbeat, UnitWork, sources_of
from postcall.voiceprint_work import Named, VoiceprintConfig, enrol_tracks, name_turns

log = logging.getLogger(__name__)

JOBS = Counter("postcall_jobs_total", "Transcription jobs finished by this process", ["outcome"])
JOB_SECONDS = Histogram(
    "postcall_job_seconds",
    "Wall time of finished transcription jobs",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200),
)


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: float = 60.0
    max_attempts: int = 3
    poll_s: float = 1.0
    chunk_max_s: float = 300.0
    beam_size: int = 5
    max_duration_s: float = 4 * 3600.0
    reconcile_every_s: float = 30.0
    split_min_s: float = 600.0
    unit_s: float = 300.0
    voiceprints: VoiceprintConfig = field(default_factory=VoiceprintConfig)


_PARKED = object()  # a split job's units are published: the job waits for them


class Worker(UnitWork):
    """Runs jobs (and units: ``UnitWork``) from ``store`` with ``engine`` until told to stop."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        engine: Engine,
        config: WorkerConfig | None = None,
        *,
        worker_id: str | None = None,
        embedder: SpeakerEmbedder | None = None,
    ) -> None:
        """``embedder``: the speaker model diarization uses (None: the bundled encoder,
        loaded at the first diarized job)."""
        self.store = store
        self.blobs = blobs
        self.engine = engine
        self.embedder = embedder
        self.config = config or WorkerConfig()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_id('w')[2:10]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.current: Transcription | None = None
        self.current_unit: UnitClaim | None = None
        self.on_publish: Callable[[], None] | None = None  # wakes idle peers (a pool)
        self.after_job: Callable[[Transcription], None] | None = None  # once it has ended
        self.sweeper: Sweeper | None = None  # retention, run when idle
        self._last_reconcile = time.monotonic()
        self.outage = Outage(f"worker {self.worker_id}", log)

    def notify(self) -> None:
        """Wake an idle worker now (a job was just queued)."""
        self._wake.set()

    def speaker_embedder(self) -> SpeakerEmbedder:
        """The speaker model of diarization and voiceprints: the configured one, else
        the bundled encoder (loaded once per process)."""
        return self.embedder or load_embedder()

    def stop(self) -> None:
        """Ask the worker to stop; a running job is released at its next chunk."""
        self._stop.set()
        self._wake.set()

    def run(self, *, burst: bool = False) -> int:
        """Process jobs until stopped (or, with ``burst``, until the queue is empty)."""
        done = 0
        log.info("worker %s ready", self.worker_id)
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Unavailable as exc:
                self._stop.wait(self.outage.failed(exc))  # a new job does not end an outage
                continue
            # A claim that found nothing proves the store answers; a job run, every backend.
            self.outage.recovered(Unavailable if ran else StoreUnavailable)
            if ran:
                done += 1
                continue
            if burst:
                break
            self._maybe_reconcile()
            if self.sweeper is not None:
                self.sweeper.maybe_sweep()
            self._wake.wait(self.config.poll_s)
            self._wake.clear()
        return done

    def _maybe_reconcile(self) -> None:
        if time.monotonic() - self._last_reconcile < self.config.reconcile_every_s:
            return
        self._last_reconcile = time.monotonic()
        try:
            restored = self.store.reconcile()
        except Unavailable:
            return  # the claims report the outage
        except Exception:
            log.exception("reconciling the queue failed")
            return
        if restored:
            log.warning("re-enqueued %d queued jobs that had lost their queue entry", restored)

    def run_once(self) -> bool:
        """Claim and run one job or unit; False when there was none."""
        work = self.store.claim_work(
            self.worker_id, lease_s=self.config.lease_s, max_attempts=self.config.max_attempts
        )
        if work is None:
            return False
        job: Transcription | None = work if isinstance(work, Transcription) else None
        if isinstance(work, UnitClaim):
            self.current_unit = work
            try:
                job = self.process_unit(work)  # the job, when this was its last unit
            finally:
                self.current_unit = None
        if job is not None:
            self.current = job
            try:
                # A job assembled from units shared by many workers says nothing of one
                # worker's pace: only whole jobs are timed for the queue's estimates.
                self.process(job, timed=isinstance(work, Transcription))
            finally:
                self.current = None
        return True

    def process(self, job: Transcription, *, timed: bool = True) -> None:
        started = time.monotonic()
        result: TranscriptionResult | object = None
        heartbeat = Heartbeat(self.store, job.id, self.worker_id, self.config.lease_s)
        heartbeat.progress = job.progress
        heartbeat.start()
        outcome = "completed"
        outage: Unavailable | None = None
        try:
            result = self._run(job, heartbeat)
            if result is _PARKED:
                outcome = "split"
            elif not isinstance(result, TranscriptionResult):
                outcome = "abandoned"
            elif not self._durable(lambda: self.store.complete(job.id, self.worker_id, result)):
                outcome = "abandoned"
                log.warning("job %s: lease lost before completion; result dropped", job.id)
        except Interrupted:
            outcome = "released"
            if heartbeat.lost:
                log.warning("job %s: lease lost or job deleted; stopped", job.id)
            elif self._release_quietly(job):
                log.info("job %s released (worker stopping)", job.id)
        except Unavailable as exc:
            # Not the job's fault: it goes back to the queue, its kept chunks with it.
            outcome, outage = "released", exc
            self._give_back(lambda: self.store.release(job.id, self.worker_id), f"job {job.id}")
        except PostcallError as exc:
            outcome = "failed"
            log.info("job %s failed: %s", job.id, exc)
            error = TranscriptionError(exc.code, exc.message)
            self._durable(lambda: self.store.fail(job.id, self.worker_id, error))
        except Exception as exc:
            outcome = "failed"
            log.exception("job %s crashed", job.id)
            crash = TranscriptionError("internal_error", f"{exc}")
            self._durable(lambda: self.store.fail(job.id, self.worker_id, crash))
        finally:
            heartbeat.stop()
        JOBS.labels(outcome).inc()
        if outcome == "split":
            log.info("job %s split into units (%.1f s)", job.id, time.monotonic() - started)
            return
        if outcome in ("completed", "failed"):
            JOB_SECONDS.observe(time.monotonic() - started)
        if outcome == "completed" and timed and isinstance(result, TranscriptionResult):
            self._record_run(result.duration, time.monotonic() - started)
        log.info("job %s %s in %.1f s", job.id, outcome, time.monotonic() - started)
        if outcome in ("completed", "failed") and self.after_job is not None:
            try:
                self.after_job(job)
            except Unavailable as exc:
                log.warning("job %s: what follows its end is left undone: %s", job.id, exc)
            except Exception:  # the job is done; what follows it must not stop the worker
                log.exception("job %s: what follows its end failed", job.id)
        if outage is not None:
            raise outage  # the run loop backs off before claiming again

    def _record_run(self, audio_s: float, elapsed_s: float) -> None:
        """Keep the job's pace for the queue's estimates (bookkeeping: never fatal)."""
        try:
            self.store.record_run(audio_s, elapsed_s)
        except Exception as exc:
            log.warning("could not record the job's speed: %s", exc)

    def _release_quietly(self, job: Transcription) -> bool:
        try:
            return self.store.release(job.id, self.worker_id)
        except Unavailable:
            return False  # stopping during an outage: the lease runs out instead

    def _run(self, job: Transcription, heartbeat: Heartbeat) -> TranscriptionResult | object:
        try:
            recording = self.store.get_recording(job.tenant, job.recording_id)
        except NotFound:
            return None  # deleted while queued
        duration = recording.media.duration
        if duration > self.config.max_duration_s:
            raise DurationExceeded(
                f"the recording lasts {duration:.0f} s, more than the limit of "
                f"{self.config.max_duration_s:.0f} s (POSTCALL_MAX_DURATION_S)"
            )
        # The header's duration may lie: count the samples (stopping past the limit),
        # so that the limit, the plan and progress all go by the true length.
        sources = self._measured(sources_of(recording, job), heartbeat)
        duration = max(s.offset + s.duration for s in sources)
        if recording.tracks and job.options.speakers is not SpeakerMode.SEPARATE_STREAMS:
            duration = recording.media.duration  # the one source is the first file only
        units = self.store.list_units(job.id)
        if units or split.should_split(
            sources, split_min_s=self.config.split_min_s, unit_s=self.config.unit_s
        ):
            chunks = self._split(job, sources, units, heartbeat)
            if chunks is None:
                return _PARKED
            return self._finish(job, recording, chunks, duration)
        done = {i: ChunkResult.from_json(p) for i, p in self.store.load_chunks(job.id).items()}
        if done:
            log.info("job %s resumes with %d chunks already done", job.id, len(done))

        def on_chunk(chunk: ChunkResult, progress: float) -> None:
            if chunk.index not in done:
                payload = chunk.to_json()
                self._durable(lambda: self.store.save_chunk(job.id, chunk.index, payload))
            heartbeat.progress = progress
            heartbeat.beat()  # progress shows at once, and the lease is renewed

        options = EngineOptions(
            language=job.options.language,
            beam_size=self.config.beam_size,
            prompt=job.options.prompt,
        )
        chunks = transcribe_sources(
            sources,
            self.blobs.local_file,
            self.engine,
            options,
            chunk_max_s=self.config.chunk_max_s,
            concurrency=chunks_at_once(self.engine),
            done=done,
            on_chunk=on_chunk,
            should_stop=lambda: self._stop.is_set() or heartbeat.lost,
            max_s=self.config.max_duration_s,
        )
        return self._finish(job, recording, chunks, duration)

    def _measured(self, sources: list[Source], heartbeat: Heartbeat) -> list[Source]:
        """``sources`` with their decoded lengths; ``DurationExceeded`` past the limit."""
        lengths: dict[tuple[str, int | None], float] = {}
        measured = []
        for source in sources:
            where = (source.media_key, source.stream_index)
            if where not in lengths:
                if self._stop.is_set() or heartbeat.lost:
                    raise Interrupted()
                with self.blobs.local_file(source.media_key) as path:
                    # The first full decode of untrusted bytes: in a limited child.
                    lengths[where] = decode_child.measure(
                        path,
                        stream_index=source.stream_index,
                        max_s=max(0.0, self.config.max_duration_s - source.offset),
                    )
            measured.append(replace(source, duration=lengths[where]))
        return measured

    def _finish(
        self,
        job: Transcription,
        recording: Recording,
        chunks: list[ChunkResult],
        duration: float,
    ) -> TranscriptionResult:
        """Assemble the transcript from every chunk's result and keep its document."""
        participants = participants_from_metadata(recording.metadata)
        notes: tuple[VoiceprintNote, ...] = ()
        attribute = self._attribution(recording, job, participants)
        if isinstance(attribute, NamedAttribution):
            participants += attribute.named.participants
            notes = attribute.named.notes
        document = assemble(
            chunks,
            transcription_id=job.id,
            recording_id=recording.id,
            duration=duration,
            speaker=default_speaker(recording.metadata),
            participants=participants,
            language_hint=job.options.language,
            attribute=attribute,
            started_at=started_at_from_metadata(recording.metadata),
        )
        if job.options.enroll_voiceprints and job.options.speakers is SpeakerMode.SEPARATE_STREAMS:
            # After the transcript is made: a recording with no speech enrols no one.
            notes = enrol_tracks(
                self.store,
                self.blobs,
                recording,
                self.speaker_embedder(),
                self.config.voiceprints,
                max_duration_s=self.config.max_duration_s,
            )
        key = document_key(job.id)
        self.blobs.put_bytes(key, formats.to_json(document).encode())
        return TranscriptionResult(
            language=document.language,
            duration=duration,
            segment_count=len(document.segments),
            document_key=key,
            voiceprints=notes,
        )

    def _attribution(
        self, recording: Recording, job: Transcription, participants: tuple[Participant, ...]
    ) -> Callable[[tuple[Segment, ...]], tuple[Segment, ...]] | None:
        """How speakers are given to the transcript's segments, for the job's mode."""
        names = {p.id: p.name for p in participants}
        mode = job.options.speakers
        if mode is SpeakerMode.SEPARATE_STREAMS:
            return lambda segments: speakers.name_speakers(segments, names)
        if mode is SpeakerMode.TIMELINE:
            turns = [
                speakers.Turn(e.start, e.end, e.participant_id)
                for e in timeline_from_metadata(recording.metadata)
            ]
            return lambda segments: speakers.name_speakers(
                speakers.attribute(segments, turns), names
            )
        if mode is SpeakerMode.DIARIZE:
            return NamedAttribution(self._diarize(recording, job))
        return None

    def _diarize(self, recording: Recording, job: Transcription) -> Named:
        """Who spoke when, with the speakers whose voiceprints match named (unless the
        job turned matching off)."""
        from postcall.speakers import diarize

        with self.blobs.local_file(recording.media_key) as path:
            mono = np.concatenate(list(audio.decode(path, max_s=self.config.max_duration_s)))
        found = diarize.diarize(
            mono,
            num_speakers=job.options.num_speakers,
            min_speakers=job.options.min_speakers or 1,
            max_speakers=job.options.max_speakers or 8,
            encoder=self.speaker_embedder(),
        )
        turns = [speakers.Turn(t.start, t.end, f"spk{t.speaker}") for t in found]
        if not job.options.match_voiceprints or not turns:
            return Named(turns, {}, (), ())
        return name_turns(
            self.store, self.speaker_embedder(), mono, turns, recording, self.config.voiceprints
        )


class NamedAttribution:
    """Words to diarized turns, the speakers recognised by voiceprint named."""

    def __init__(self, named: Named) -> None:
        self.named = named

    def __call__(self, segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
        turns = self.named.turns
        return speakers.name_speakers(speakers.attribute(segments, turns), self.named.names)


class WorkerPool:
    """``concurrency`` workers in threads of this process, sharing one engine.

    ``stop`` asks them to stop, waits up to ``grace_s`` for each to finish or release
    its job at the next chunk, then releases whatever is still held so that another
    worker can take it at once (a release is not an attempt).
    """

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        engine: Engine,
        config: WorkerConfig,
        *,
        concurrency: int = 1,
        after_job: Callable[[Transcription], None] | None = None,
        sweeper: Sweeper | None = None,
        embedder: SpeakerEmbedder | None = None,
    ) -> None:
        self.workers = [
            Worker(store, blobs, engine, config, embedder=embedder)
            for _ in range(max(1, concurrency))
        ]
        for w in self.workers:
            w.on_publish = self.notify
            w.after_job = after_job
            w.sweeper = sweeper
        self._threads: list[threading.Thread] = []
        self._store = store

    def notify(self) -> None:
        for w in self.workers:
            w.notify()

    def preload(self) -> bool:
        """Load the in-process model now rather than at the first job; False when the
        engine has nothing to load (a remote one)."""
        engine = self.workers[0].engine
        if not isinstance(engine, Loadable):
            return False
        engine.load()
        return True

    def start(self, *, burst: bool = False) -> None:
        for i, w in enumerate(self.workers):
            t = threading.Thread(
                target=w.run, kwargs={"burst": burst}, name=f"postcall-worker-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to end; True when all have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def stop(self, grace_s: float = 25.0) -> None:
        for w in self.workers:
            w.stop()
        if self.join(grace_s):
            return
        for w in self.workers:
            job = w.current
            held = w.current_unit
            try:
                if job is not None and self._store.release(job.id, w.worker_id):
                    log.warning(
                        "job %s released: it did not reach a chunk boundary in time", job.id
                    )
                if held is not None and self._store.release_unit(
                    held.job.id, held.unit.index, w.worker_id
                ):
                    log.warning("unit %s#%d released: still running", held.job.id, held.unit.index)
            except Unavailable:
                log.warning(
                    "the store does not answer: what %s holds waits for its lease", w.worker_id
                )
