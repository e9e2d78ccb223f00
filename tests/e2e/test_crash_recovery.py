"""Workers that die, freeze or are stopped lose nothing: real processes, both stores.

A timed test engine (behind the Engine Protocol) stands in for Whisper: the queue is
what is under test here.
"""

from __future__ import annotations

import random
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from postcall.blobs.local import LocalBlobStore
from postcall.domain import TranscriptionStatus
from postcall.service import Service
from postcall.settings import Settings
from postcall.store.base import Store
from postcall.wiring import build_store
from tests import media
from tests.contract.redis_server import RedisServer, redis_server  # noqa: F401
from tests.e2e.workers import WorkerProcess
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'postcall.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.fresh_url()


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "POSTCALL_STORE_URL": store_url,
        "POSTCALL_BLOB_URL": f"file://{tmp_path / 'blobs'}",
        "POSTCALL_ENGINE_FACTORY": "tests.fakes:timed_engine",
        "POSTCALL_TEST_ENGINE_SECONDS": "0.1",
        "POSTCALL_LEASE_S": "2",
        "POSTCALL_CHUNK_MAX_S": "30",
        "POSTCALL_WORKER_POLL_S": "0.1",
        "POSTCALL_LOG_LEVEL": "INFO",
        # No dispatcher: the outbox keeps every event, so the tests can count them.
        "POSTCALL_WEBHOOK_DISPATCH": "false",
    }


@pytest.fixture
def store(env: dict[str, str]) -> Iterator[Store]:
    s = build_store(Settings(store_url=env["POSTCALL_STORE_URL"]))
    yield s
    s.close()


def tone_with_pauses(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    signal_ = 0.3 * np.sin(2 * np.pi * 220 * t)
    signal_[(t % 7) > 6] = 0
    return signal_.astype(np.float32)


def queue_jobs(
    store: Store, env: dict[str, str], tmp_path: Path, count: int, seconds: float = 1.2
) -> list[str]:
    blobs = LocalBlobStore(env["POSTCALL_BLOB_URL"].removeprefix("file://"))
    service = Service(store, blobs)
    wav = media.write_audio(tmp_path / f"tone-{seconds}.wav", tone_with_pauses(seconds))
    ids = []
    for _ in range(count):
        with wav.open("rb") as fh:
            rec = service.create_recording("t", fh, filename="a.wav", content_type="audio/wav")
        ids.append(service.request_transcription("t", rec.id).id)
    return ids


def statuses(store: Store, ids: list[str]) -> Counter[TranscriptionStatus]:
    return Counter(store.get_transcription("t", i).status for i in ids)


def completions(store: Store) -> Counter[str]:
    """How many times each job was accepted as completed: the store writes one
    ``transcript.done`` event in the same transaction as each accepted completion
    (a worker's log line comes after the commit, so a SIGKILL can lose it)."""
    events = store.pending_events(100_000)
    return Counter(e.transcription_id or "" for e in events if e.type == "transcript.done")


def test_random_sigkills_lose_nothing(store: Store, env: dict[str, str], tmp_path: Path) -> None:
    ids = queue_jobs(store, env, tmp_path, 100)
    env = {**env, "POSTCALL_MAX_ATTEMPTS": "10"}
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log") for i in range(3)]
    rng = random.Random(7)
    kills = 0
    pause = threading.Event()

    def all_terminal() -> bool:
        return sum(statuses(store, ids)[s] for s in TranscriptionStatus if s.terminal) == 100

    try:
        while not all_terminal():
            assert kills < 60, "the jobs should have finished long ago"
            pause.wait(1.5)  # the chaos schedule: one kill every 1.5 s
            victim = rng.choice(workers)
            victim.kill()
            kills += 1
            victim.start()
    finally:
        for w in workers:
            w.kill()
    final = statuses(store, ids)
    assert final[TranscriptionStatus.COMPLETED] == 100, final
    assert kills >= 3
    done = completions(store)
    assert set(done) == set(ids)
    assert max(done.values()) == 1, "a job was accepted as completed twice"


def test_a_frozen_worker_is_taken_over_and_its_late_result_refused(
    store: Store, env: dict[str, str], tmp_path: Path
) -> None:
    [job] = queue_jobs(store, env, tmp_path, 1)
    env = {**env, "POSTCALL_TEST_ENGINE_SECONDS": "4", "POSTCALL_LEASE_S": "1"}
    frozen = WorkerProcess(env, tmp_path / "frozen.log")
    wait_for(
        lambda: store.get_transcription("t", job).status is TranscriptionStatus.PROCESSING,
        timeout=30,
        what="the first worker to claim the job",
    )
    frozen.signal(signal.SIGSTOP)
    rescuer = WorkerProcess(env, tmp_path / "rescuer.log")
    try:
        wait_for(
            lambda: store.get_transcription("t", job).status is TranscriptionStatus.COMPLETED,
            timeout=60,
            what="the second worker to take over and complete the job",
        )
        frozen.signal(signal.SIGCONT)
        wait_for(
            lambda: "lease lost" in frozen.log(),
            timeout=30,
            what="the frozen worker to find its lease lost",
        )
    finally:
        frozen.signal(signal.SIGCONT)
        frozen.kill()
        rescuer.kill()
    assert completions(store) == {job: 1}
    assert f"job {job} completed" in rescuer.log()
    assert store.get_transcription("t", job).attempts == 2


def test_a_job_that_kills_its_worker_every_time_fails_as_worker_lost(
    store: Store, env: dict[str, str], tmp_path: Path
) -> None:
    good = queue_jobs(store, env, tmp_path, 5, seconds=1.2)
    [poison] = queue_jobs(store, env, tmp_path, 1, seconds=2.5)
    env = {
        **env,
        "POSTCALL_TEST_POISON_SECONDS": "2.5",
        "POSTCALL_LEASE_S": "1",
        "POSTCALL_MAX_ATTEMPTS": "3",
    }
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log") for i in range(2)]
    tick = threading.Event()
    try:

        def settled() -> bool:
            for w in workers:  # a supervisor restarts dead workers
                if not w.alive():
                    w.start()
            tick.wait(0.1)
            return all(store.get_transcription("t", i).status.terminal for i in [*good, poison])

        wait_for(settled, timeout=120, what="every job to end")
    finally:
        for w in workers:
            w.kill()
    lost = store.get_transcription("t", poison)
    assert lost.status is TranscriptionStatus.FAILED
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert lost.attempts == 3
    assert statuses(store, good)[TranscriptionStatus.COMPLETED] == 5


def test_sigterm_mid_job_releases_it_and_another_worker_resumes(
    store: Store, env: dict[str, str], tmp_path: Path
) -> None:
    [job] = queue_jobs(store, env, tmp_path, 1, seconds=140)  # five chunks
    env = {**env, "POSTCALL_TEST_ENGINE_SECONDS": "1.5"}
    first = WorkerProcess(env, tmp_path / "first.log")
    wait_for(
        lambda: store.get_transcription("t", job).progress > 0,
        timeout=60,
        what="the first chunk to finish",
    )
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    released = store.get_transcription("t", job)
    assert released.status is TranscriptionStatus.QUEUED
    assert released.attempts == 0  # a release is not an attempt
    assert f"job {job} released" in first.log()
    kept = len(store.load_chunks(job))
    assert 1 <= kept < 5
    second = WorkerProcess(env, tmp_path / "second.log", "--burst")
    assert second.wait(timeout=60) == 0
    done = store.get_transcription("t", job)
    assert done.status is TranscriptionStatus.COMPLETED
    assert f"resumes with {kept} chunks already done" in second.log()
