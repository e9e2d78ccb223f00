"""Retention against every store backend: finding expired recordings, pruning webhook
events, the sweeper (two at once), and media deleted after transcription."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from postcall.blobs.local import LocalBlobStore
from postcall.domain import TranscriptionStatus
from postcall.errors import Conflict, NotFound
from postcall.retention import DAY_S, Retention, Sweeper
from postcall.service import Service, document_key
from postcall.store.base import Store
from postcall.worker import Worker, WorkerConfig
from tests import media
from tests.contract.test_store import RESULT, Clock, StoreFactory, recording
from tests.contract.test_webhook_store import attempt, endpoint
from tests.fakes import ScriptedEngine
from tests.helpers import wait_for

FAR_FUTURE = 4_000_000_000.0  # 2096: every event of these tests is older


def test_expired_recordings_across_tenants_oldest_first(store: Store) -> None:
    for rec_id, tenant, offset in [
        ("r3", "t1", 30),
        ("r1", "t:2", 10),  # a tenant whose name needs escaping in keys
        ("r2", "t1", 20),
        ("r4", "t3", 40),
    ]:
        store.add_recording(recording(rec_id, tenant, offset))
    cutoff = recording("x", offset=35).created_at.timestamp()
    assert store.expired_recordings(cutoff, 10) == [("t:2", "r1"), ("t1", "r2"), ("t1", "r3")]
    assert store.expired_recordings(cutoff, 2) == [("t:2", "r1"), ("t1", "r2")]
    assert store.expired_recordings(recording("x").created_at.timestamp(), 10) == []
    store.delete_recording("t:2", "r1")
    assert store.expired_recordings(cutoff, 10) == [("t1", "r2"), ("t1", "r3")]


def test_old_webhook_events_are_pruned_once_nothing_is_left_to_deliver(
    store: Store, clock: Clock
) -> None:
    ep = endpoint()
    store.add_endpoint(ep)
    store.add_recording(recording("delivered"))
    (done_event,) = store.pending_events(10)
    assert store.fan_out(done_event.id, "{}", [ep.id])
    delivered = store.claim_delivery("d1", lease_s=30, max_attempts=3)
    assert delivered is not None
    assert store.finish_attempt(delivered.id, "d1", attempt(True), retry_at=None)

    store.add_recording(recording("waiting"))
    (waiting_event,) = store.pending_events(10)
    assert store.fan_out(waiting_event.id, "{}", [ep.id])  # its delivery is still pending
    store.add_recording(recording("unsent"))  # not even fanned out
    (unsent_event,) = store.pending_events(10)

    assert store.prune_webhooks(0.0, 100) == 0  # nothing that old
    assert store.prune_webhooks(FAR_FUTURE, 100) == 1
    with pytest.raises(NotFound):
        store.get_delivery("t1", delivered.id)
    listed = store.list_deliveries("t1", endpoint_id=ep.id, limit=10, cursor=None).items
    assert [d.event_id for d in listed] == [waiting_event.id]
    assert [e.id for e in store.pending_events(10)] == [unsent_event.id]

    # Once its delivery has failed for good, the other event goes too.
    clock.advance(1)
    pending = store.claim_delivery("d1", lease_s=30, max_attempts=3)
    assert pending is not None and pending.event_id == waiting_event.id
    assert store.finish_attempt(pending.id, "d1", attempt(False, 500, "HTTP 500"), retry_at=None)
    assert store.prune_webhooks(FAR_FUTURE, 100) == 1
    assert store.list_deliveries("t1", endpoint_id=ep.id, limit=10, cursor=None).items == []
    assert store.prune_webhooks(FAR_FUTURE, 100) == 0


def tone(path: Path) -> Path:
    t = np.arange(16000) / 16000
    return media.write_audio(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def uploaded(service: Service, tmp_path: Path, tenant: str = "t1") -> str:
    with tone(tmp_path / "tone.wav").open("rb") as fh:
        rec = service.create_recording(tenant, fh, filename="tone.wav", content_type="audio/wav")
    return rec.id


def test_two_sweepers_delete_expired_recordings_with_their_files(
    make_store: StoreFactory, clock: Clock, tmp_path: Path
) -> None:
    store = make_store(clock)
    blobs = LocalBlobStore(tmp_path / "blobs")
    kept = Retention(days=30, webhook_days=None)
    service = Service(store, blobs, retention=kept)
    old = service.get_recording("t1", uploaded(service, tmp_path))
    tr = service.request_transcription("t1", old.id)
    blobs.put_bytes(document_key(tr.id), b"{}")
    fresh = replace(old, id="fresh", created_at=old.created_at + timedelta(days=20))
    store.add_recording(fresh)
    assert service.expires_at(old) == old.created_at + timedelta(days=30)

    now = old.created_at.timestamp()
    early = Sweeper(service, store, kept, clock=lambda: now + 29 * DAY_S)
    assert early.sweep().recordings == 0

    late = [Sweeper(service, store, kept, clock=lambda: now + 31 * DAY_S) for _ in range(2)]
    counts: list[int] = []
    errors: list[BaseException] = []

    def sweep(s: Sweeper) -> None:
        try:
            counts.append(s.sweep().recordings)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in late]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and sum(counts) == 1
    with pytest.raises(NotFound):
        service.get_recording("t1", old.id)
    with pytest.raises(NotFound):
        service.get_transcription("t1", tr.id)
    assert not blobs.exists(old.media_key)
    assert not blobs.exists(document_key(tr.id))
    assert service.get_recording("t1", "fresh") == fresh


def test_media_is_deleted_once_no_transcription_waits_or_runs(
    make_store: StoreFactory, clock: Clock, tmp_path: Path
) -> None:
    store = make_store(clock)
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = Service(store, blobs, retention=Retention(delete_media_after_transcription=True))
    rec = service.get_recording("t1", uploaded(service, tmp_path))
    first = service.request_transcription("t1", rec.id)
    second = service.request_transcription("t1", rec.id)

    claimed = store.claim("w1", lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.id == first.id
    assert store.complete(first.id, "w1", RESULT)
    assert not service.release_media_if_done("t1", rec.id)  # the second still waits
    assert blobs.exists(rec.media_key)

    assert store.claim("w1", lease_s=30, max_attempts=3) is not None
    assert store.complete(second.id, "w1", RESULT)
    assert service.release_media_if_done("t1", rec.id)
    assert not blobs.exists(rec.media_key)
    done = service.get_transcription("t1", first.id)
    assert done.status is TranscriptionStatus.COMPLETED  # the transcripts stay
    with pytest.raises(Conflict) as refused:
        service.request_transcription("t1", rec.id)
    assert refused.value.code == "media_deleted"


def test_a_sweeper_runs_at_most_once_a_period(
    make_store: StoreFactory, clock: Clock, tmp_path: Path
) -> None:
    store = make_store(clock)
    blobs = LocalBlobStore(tmp_path / "blobs")
    service = Service(store, blobs)
    sweeper = Sweeper(service, store, Retention(days=1), every_s=3600, first_in_s=0)
    assert sweeper.maybe_sweep() is not None
    assert sweeper.maybe_sweep() is None  # not before the next period
    idle = Sweeper(service, store, Retention(days=None, webhook_days=None), first_in_s=0)
    assert idle.maybe_sweep() is None  # nothing to keep track of


def test_an_idle_worker_sweeps(make_store: StoreFactory, clock: Clock, tmp_path: Path) -> None:
    store = make_store(clock)
    blobs = LocalBlobStore(tmp_path / "blobs")
    kept = Retention(days=1, webhook_days=None)
    service = Service(store, blobs, retention=kept)
    rec = service.get_recording("t1", uploaded(service, tmp_path))
    later = rec.created_at.timestamp() + 2 * DAY_S
    worker = Worker(store, blobs, ScriptedEngine(), WorkerConfig(poll_s=0.05))
    worker.sweeper = Sweeper(service, store, kept, first_in_s=0, clock=lambda: later)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        # The record goes first, then its files: wait for both.
        wait_for(
            lambda: store.expired_recordings(later, 10) == [] and not blobs.exists(rec.media_key),
            timeout=30,
            what="the worker to sweep",
        )
    finally:
        worker.stop()
        thread.join(timeout=30)
