"""Backends that go away and come back: a real redis-server stopped and started again on
its port, and the real S3 test server unplugged from its port and plugged in again.

The adapters must report an outage as ``StoreUnavailable`` / ``BlobsUnavailable``
(retryable), soon, and work again once the backend is back; a worker must neither fail
nor lose the job it holds while the media cannot be read, and must finish it after.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import numpy as np
import pytest
from botocore.config import Config  # type: ignore[import-untyped]

from postcall.blobs.local import LocalBlobStore
from postcall.blobs.s3 import S3BlobStore
from postcall.domain import TranscriptionStatus
from postcall.errors import BlobsUnavailable, NotFound, StoreUnavailable
from postcall.service import Service
from postcall.store.redis import RedisStore
from postcall.store.sqlite import SqliteStore
from postcall.worker import Worker, WorkerConfig
from tests import media
from tests.contract.redis_server import RedisProcess, redis_process_fixture  # noqa: F401
from tests.contract.s3_server import S3Server, s3_server_fixture  # noqa: F401
from tests.contract.unpluggable import Unpluggable
from tests.fakes import ScriptedEngine
from tests.helpers import wait_for

TENANT = "t1"
SOON_S = 8.0  # an outage must be reported within this, not after minutes of retries


@pytest.fixture
def s3_plug(s3_server: S3Server) -> Iterator[Unpluggable]:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    plug = Unpluggable((host, int(port)))
    yield plug
    plug.unplug()


def blobs_through(plug: Unpluggable, s3: S3Server, prefix: str) -> S3BlobStore:
    client = boto3.session.Session(
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
    ).client(
        "s3",
        endpoint_url=plug.url,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 2},
            connect_timeout=2,
        ),
    )
    return S3BlobStore(s3.bucket, prefix, client=client)


def tone(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 16000)) / 16000
    return media.write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def test_redis_store_reports_an_outage_and_works_again_after_a_restart(
    redis_process: RedisProcess, tmp_path: Path
) -> None:
    store = RedisStore.from_url(redis_process.url)
    blobs_dir = tmp_path / "blobs"
    service = Service(store, LocalBlobStore(blobs_dir))
    with tone(tmp_path / "a.wav").open("rb") as fh:
        rec = service.create_recording(TENANT, fh, filename="a.wav", content_type="audio/wav")
    queued = service.request_transcription(TENANT, rec.id)

    redis_process.stop(kill=True)
    for call in (
        lambda: store.get_recording(TENANT, rec.id),
        lambda: store.claim_work("w1", lease_s=30, max_attempts=3),
        lambda: store.pending_events(10),
        lambda: store.tenant_for_key("0" * 64),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert caught.value.retryable
        assert time.monotonic() - started < SOON_S

    # An upload while the store is down: refused, and its media is not left behind.
    with tone(tmp_path / "b.wav").open("rb") as fh, pytest.raises(StoreUnavailable):
        service.create_recording(TENANT, fh, filename="b.wav", content_type="audio/wav")
    assert [p.name for p in (blobs_dir / "media").iterdir()] == [Path(rec.media_key).name]

    redis_process.start()  # same port, its append-only file read back
    assert store.get_recording(TENANT, rec.id) == rec
    claimed = store.claim_work("w1", lease_s=30, max_attempts=3)
    assert claimed is not None and getattr(claimed, "id", None) == queued.id
    store.close()


def test_s3_blobs_report_an_outage_and_work_again_when_back(
    s3_plug: Unpluggable,
    s3_server: S3Server,
) -> None:
    blobs = blobs_through(s3_plug, s3_server, "outage-contract")
    blobs.put_bytes("transcripts/kept.json", b"{}")
    s3_plug.unplug()
    for call in (
        lambda: blobs.put(f"media/{'a' * 32}", io.BytesIO(b"x" * 100)),
        lambda: blobs.put_bytes("transcripts/other.json", b"{}"),
        lambda: blobs.get_bytes("transcripts/kept.json"),
        lambda: blobs.exists("transcripts/kept.json"),
        lambda: blobs.delete("transcripts/kept.json"),
        lambda: blobs.local_file("transcripts/kept.json").__enter__(),
    ):
        started = time.monotonic()
        with pytest.raises(BlobsUnavailable) as caught:
            call()
        assert caught.value.retryable
        assert time.monotonic() - started < SOON_S
    s3_plug.plug()
    assert blobs.get_bytes("transcripts/kept.json") == b"{}"
    with pytest.raises(NotFound):
        blobs.get_bytes("transcripts/other.json")


def test_a_worker_keeps_its_job_through_a_blob_outage_and_finishes_it_after(
    s3_plug: Unpluggable,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 'db.sqlite'}")
    blobs = blobs_through(s3_plug, s3_server, "outage-worker")
    service = Service(store, blobs)
    with tone(tmp_path / "a.wav").open("rb") as fh:
        rec = service.create_recording(TENANT, fh, filename="a.wav", content_type="audio/wav")
    job = service.request_transcription(TENANT, rec.id)

    s3_plug.unplug()
    worker = Worker(store, blobs, ScriptedEngine(), WorkerConfig(lease_s=30, poll_s=0.05))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        # The worker claimed the job, could not read its media, gave it back (not failed,
        # no attempt spent) and now waits for the blob store.
        wait_for(lambda: worker.outage.active, timeout=30, what="the worker to see the outage")
        seen = store.get_transcription(TENANT, job.id)
        assert seen.status is TranscriptionStatus.QUEUED and seen.error is None
        assert thread.is_alive()

        s3_plug.plug()
        done = wait_for(
            lambda: (
                (t := store.get_transcription(TENANT, job.id)).status
                is TranscriptionStatus.COMPLETED
                and t
            ),
            timeout=60,
            what="the job to complete after the outage",
        )
        assert done.attempts == 1  # the releases spent no attempt; the last claim did
        assert not worker.outage.active
    finally:
        worker.stop()
        thread.join(timeout=30)
    store.close()


def test_sqlite_store_reports_a_held_lock_or_a_full_disk_as_an_outage(tmp_path: Path) -> None:
    """Another process holding SQLite's write lock past the busy timeout, or a disk that
    is full, is an outage (``StoreUnavailable``, retryable), not an internal error; the
    store works again once the lock is let go. Reads go on meanwhile (WAL)."""
    import sqlite3

    path = tmp_path / "db.sqlite"
    store = SqliteStore(path, busy_timeout_s=0.2)
    service = Service(store, LocalBlobStore(tmp_path / "blobs"))
    audio = tone(tmp_path / "a.wav")

    def add(metadata: dict[str, str] | None = None) -> str:
        with audio.open("rb") as fh:
            return service.create_recording(
                TENANT, fh, filename="a.wav", content_type="audio/wav", metadata=metadata
            ).id

    first = add()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # what a stuck writer in another process holds
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="database is locked") as caught:
            add()
        assert time.monotonic() - started < SOON_S
        assert caught.value.retryable and caught.value.code == "store_unavailable"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.get_recording(TENANT, first).id == first
    assert store.get_recording(TENANT, add()).filename == "a.wav"

    # A full disk: the database may not grow past the pages it has now.
    pages = store._conn().execute("PRAGMA page_count").fetchone()[0]
    store._conn().execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreUnavailable, match="full"):
        for _ in range(200):  # each adds a row of about 2 kB: soon a page more is needed
            add({"notes": "x" * 2000})
    store.close()
