"""The store's edits and queue facts (``postcall.store.edits``) on every backend."""

from __future__ import annotations

import pytest

from postcall.domain import TranscriptionError, TranscriptionStatus
from postcall.errors import Conflict, NotFound
from postcall.store.base import Store
from postcall.store.edits import KEPT_RUNS, Run
from postcall.store.units import UnitPlan
from tests.contract.test_store import Clock, job, recording

LEASE = 30.0


def _events(store: Store) -> list[tuple[str, str | None]]:
    return [(e.type, e.transcription_id) for e in store.pending_events(100)]


def test_metadata_is_replaced_and_stays_the_tenants(store: Store) -> None:
    store.add_recording(recording())
    renamed = {"participants": [{"id": "1", "name": "Ada Lovelace"}], "title": "Standup ✓"}
    updated = store.update_recording_metadata("t1", "rec_1", renamed)
    assert updated.metadata == renamed
    assert store.get_recording("t1", "rec_1").metadata == renamed
    assert store.get_recording("t1", "rec_1").media == recording().media
    with pytest.raises(NotFound):
        store.update_recording_metadata("t2", "rec_1", {})
    with pytest.raises(NotFound):
        store.update_recording_metadata("t1", "rec_missing", {})


def test_a_failed_job_is_queued_again_under_its_id(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t, limit=1)
    claimed = store.claim("w1", lease_s=LEASE, max_attempts=3)
    assert claimed is not None and claimed.attempts == 1
    store.heartbeat(t.id, "w1", progress=0.4, lease_s=LEASE)
    assert store.fail(t.id, "w1", TranscriptionError("engine_error", "boom"))
    clock.advance(5)
    again = store.retry_transcription("t1", t.id)
    assert again.id == t.id and again.status is TranscriptionStatus.QUEUED
    assert again.attempts == 0 and again.progress == 0 and again.error is None
    assert store.queue_depth() == 1 and store.queue_position(t.id) == 1
    # It does not take another of the recording's places (the limit here is 1).
    store.add_recording(recording("rec_2"))
    reclaimed = store.claim("w2", lease_s=LEASE, max_attempts=3)
    assert reclaimed is not None and reclaimed.id == t.id and reclaimed.attempts == 1
    assert store.fail(t.id, "w2", TranscriptionError("engine_error", "again"))
    assert [e for e in _events(store) if e[0].startswith("transcript.")] == [
        ("transcript.failed", t.id),
        ("transcript.failed", t.id),
    ]


def test_only_a_failed_job_is_retried(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    with pytest.raises(Conflict) as refused:
        store.retry_transcription("t1", t.id)
    assert refused.value.code == "not_failed"
    with pytest.raises(NotFound):
        store.retry_transcription("t2", t.id)
    with pytest.raises(NotFound):
        store.retry_transcription("t1", "tr_missing")


def test_a_retried_split_job_loses_its_units(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    assert store.claim("w1", lease_s=LEASE, max_attempts=3) is not None
    assert store.publish_units(t.id, "w1", [UnitPlan(0, "{}"), UnitPlan(1, "{}")])
    store.claim_work("w2", lease_s=LEASE, max_attempts=3)  # one unit running
    store.fail_unit(t.id, 0, "w2", TranscriptionError("engine_error", "boom"))
    assert store.get_transcription("t1", t.id).status is TranscriptionStatus.FAILED
    store.retry_transcription("t1", t.id)
    assert store.list_units(t.id) == []
    work = store.claim_work("w3", lease_s=LEASE, max_attempts=3)
    assert getattr(work, "id", None) == t.id  # the job itself, to be planned again


def test_queue_positions_follow_the_claim_order(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    jobs = [job(offset=i) for i in range(3)]
    for j in jobs:
        store.add_transcription(j)
        clock.advance(1)
    assert [store.queue_position(j.id) for j in jobs] == [1, 2, 3]
    assert store.processing_count() == 0
    first = store.claim("w1", lease_s=LEASE, max_attempts=3)
    assert first is not None and first.id == jobs[0].id
    assert [store.queue_position(j.id) for j in jobs] == [None, 1, 2]
    assert store.processing_count() == 1
    clock.advance(LEASE + 1)  # its lease ran out: no longer counted as busy
    assert store.processing_count() == 0
    assert store.queue_position("tr_missing") is None


def test_recent_runs_newest_first_and_bounded(store: Store) -> None:
    assert store.recent_runs(10) == []
    for i in range(KEPT_RUNS + 5):
        store.record_run(60.0 + i, 6.0)
    runs = store.recent_runs(1000)
    assert len(runs) == KEPT_RUNS
    assert runs[0] == Run(60.0 + KEPT_RUNS + 4, 6.0)
    assert store.recent_runs(2) == runs[:2]
