"""The store contract for chunk units: the same tests against every backend."""

from __future__ import annotations

import pytest

from postcall.domain import Transcription, TranscriptionError, TranscriptionStatus
from postcall.store.base import Store
from postcall.store.units import UNITS_PROGRESS, UnitClaim, UnitOutcome, UnitPlan, UnitStatus
from tests.contract.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.contract.test_store import (  # noqa: F401 (fixtures)
    RESULT,
    Clock,
    clock,
    job,
    make_store,
    recording,
    store,
)

LEASE = 60.0


def plan(n: int) -> list[UnitPlan]:
    return [UnitPlan(i, f'{{"unit": {i}}}') for i in range(n)]


def split_job(
    store: Store,  # noqa: F811
    units: int,
    worker: str = "planner",
    offset: int = 0,
) -> str:
    """Queue a job, claim it as ``worker`` and publish ``units`` units: the job is parked."""
    t = job(offset=offset)
    store.add_transcription(t)
    claimed = store.claim_work(worker, lease_s=LEASE, max_attempts=3)
    assert isinstance(claimed, Transcription) and claimed.id == t.id
    assert store.publish_units(t.id, worker, plan(units))
    return t.id


def claim_unit(store: Store, worker: str, max_attempts: int = 3) -> UnitClaim:  # noqa: F811
    got = store.claim_work(worker, lease_s=LEASE, max_attempts=max_attempts)
    assert isinstance(got, UnitClaim), got
    return got


@pytest.fixture(autouse=True)
def _recording(store: Store) -> None:  # noqa: F811
    store.add_recording(recording())


def failed_events(store: Store, transcription_id: str) -> list[str | None]:  # noqa: F811
    """The sub-codes of the ``transcript.failed`` events in the outbox for one job."""
    return [
        e.sub_code
        for e in store.pending_events(1000)
        if e.transcription_id == transcription_id and e.type == "transcript.failed"
    ]


def test_publishing_parks_the_job_and_any_worker_claims_its_units(store: Store) -> None:  # noqa: F811
    tid = split_job(store, 3)
    parked = store.get_transcription("t1", tid)
    assert parked.status is TranscriptionStatus.PROCESSING
    # Parked: the planner no longer holds it, and it is not claimable as a job.
    assert not store.heartbeat(tid, "planner", progress=0.5, lease_s=LEASE)
    assert not store.publish_units(tid, "planner", plan(3))
    assert store.queue_depth() == 0
    claims = [claim_unit(store, f"w{i}") for i in range(3)]
    assert [(c.job.id, c.unit.index, c.unit.spec) for c in claims] == [
        (tid, i, f'{{"unit": {i}}}') for i in range(3)
    ]
    assert all(c.unit.attempts == 1 for c in claims)
    assert store.claim_work("w9", lease_s=LEASE, max_attempts=3) is None
    assert [(u.index, u.status, u.lease_owner) for u in store.list_units(tid)] == [
        (i, UnitStatus.RUNNING, f"w{i}") for i in range(3)
    ]


def test_publishing_needs_the_job_lease(store: Store) -> None:  # noqa: F811
    t = job()
    store.add_transcription(t)
    assert store.claim_work("w1", lease_s=LEASE, max_attempts=3) is not None
    assert not store.publish_units(t.id, "intruder", plan(2))
    assert store.list_units(t.id) == []
    assert store.heartbeat(t.id, "w1", progress=0.1, lease_s=LEASE)


def test_the_last_unit_hands_the_job_to_its_worker(store: Store, clock: Clock) -> None:  # noqa: F811
    tid = split_job(store, 3)
    claims = [claim_unit(store, f"w{i}") for i in range(3)]
    # Completed in any order; progress counts units.
    assert store.complete_unit(tid, 1, "w1", '{"r": 1}', lease_s=LEASE) is UnitOutcome.DONE
    assert store.get_transcription("t1", tid).progress == pytest.approx(UNITS_PROGRESS / 3)
    assert store.complete_unit(tid, 0, "w0", '{"r": 0}', lease_s=LEASE) is UnitOutcome.DONE
    assert store.complete_unit(tid, 2, "w2", '{"r": 2}', lease_s=LEASE) is UnitOutcome.LAST
    assert store.get_transcription("t1", tid).progress == pytest.approx(UNITS_PROGRESS)
    assert store.load_chunks(tid) == {i: f'{{"r": {i}}}' for i in range(3)}
    assert claims[2].unit.lease_owner == "w2"
    # w2 now holds the job: it assembles under the job's own lease, fenced as ever.
    assert store.heartbeat(tid, "w2", progress=0.99, lease_s=LEASE)
    assert not store.heartbeat(tid, "w0", progress=0.99, lease_s=LEASE)
    assert all(u.status is UnitStatus.DONE for u in store.list_units(tid))
    # Publishing again changes nothing and keeps the job with its worker.
    assert store.publish_units(tid, "w2", plan(5))
    assert len(store.list_units(tid)) == 3
    assert store.heartbeat(tid, "w2", progress=0.99, lease_s=LEASE)
    assert store.claim_work("w9", lease_s=LEASE, max_attempts=3) is None
    assert store.complete(tid, "w2", RESULT)
    done = store.get_transcription("t1", tid)
    assert done.status is TranscriptionStatus.COMPLETED and done.progress == 1
    assert store.list_units(tid) == []


def test_an_assembling_worker_that_dies_is_taken_over(store: Store, clock: Clock) -> None:  # noqa: F811
    tid = split_job(store, 1)
    claim_unit(store, "w1")
    assert store.complete_unit(tid, 0, "w1", "{}", lease_s=LEASE) is UnitOutcome.LAST
    clock.advance(LEASE + 1)
    again = store.claim_work("w2", lease_s=LEASE, max_attempts=3)
    assert isinstance(again, Transcription) and again.id == tid
    assert again.attempts == 2
    assert [u.status for u in store.list_units(tid)] == [UnitStatus.DONE]
    assert not store.complete(tid, "w1", RESULT)
    assert store.complete(tid, "w2", RESULT)


def test_units_are_fenced_by_their_own_lease(store: Store, clock: Clock) -> None:  # noqa: F811
    tid = split_job(store, 2)
    claim_unit(store, "w1")
    assert store.heartbeat_unit(tid, 0, "w1", lease_s=LEASE)
    assert not store.heartbeat_unit(tid, 0, "w2", lease_s=LEASE)
    assert not store.heartbeat_unit(tid, 1, "w1", lease_s=LEASE)  # pending, not w1's
    assert store.complete_unit(tid, 0, "w2", "{}", lease_s=LEASE) is UnitOutcome.LOST
    assert not store.fail_unit(tid, 0, "w2", TranscriptionError("engine_error", "x"))
    assert not store.release_unit(tid, 0, "w2")
    clock.advance(LEASE / 2)
    assert store.heartbeat_unit(tid, 0, "w1", lease_s=LEASE)  # renewed: not taken over
    clock.advance(LEASE / 2 + 1)
    other = claim_unit(store, "w2")
    assert other.unit.index == 1  # unit 0's lease still runs
    clock.advance(LEASE)
    # Unit 0's lease ran out (w1 stopped renewing it): another worker takes it over.
    taken = claim_unit(store, "w3")
    assert (taken.unit.index, taken.unit.attempts) == (0, 2)
    assert not store.heartbeat_unit(tid, 0, "w1", lease_s=LEASE)
    assert store.complete_unit(tid, 0, "w1", '{"late": 1}', lease_s=LEASE) is UnitOutcome.LOST
    assert store.complete_unit(tid, 0, "w3", '{"new": 1}', lease_s=LEASE) is UnitOutcome.DONE
    assert store.load_chunks(tid) == {0: '{"new": 1}'}
    assert store.get_transcription("t1", tid).status is TranscriptionStatus.PROCESSING


def test_a_unit_that_keeps_losing_its_worker_fails_the_job(store: Store, clock: Clock) -> None:  # noqa: F811
    tid = split_job(store, 3)
    other = job(offset=5)
    for attempt in (1, 2):
        got = claim_unit(store, f"w{attempt}", max_attempts=2)
        assert (got.unit.index, got.unit.attempts) == (0, attempt)
        clock.advance(LEASE + 1)
    store.add_transcription(other)
    nxt = store.claim_work("w3", lease_s=LEASE, max_attempts=2)
    assert isinstance(nxt, Transcription) and nxt.id == other.id  # the others go on
    lost = store.get_transcription("t1", tid)
    assert lost.status is TranscriptionStatus.FAILED
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert store.list_units(tid) == []
    assert store.claim_work("w4", lease_s=LEASE, max_attempts=2) is None
    assert failed_events(store, tid) == ["worker_lost"]


def test_a_failed_unit_fails_its_job_and_a_release_is_not_an_attempt(store: Store) -> None:  # noqa: F811
    tid = split_job(store, 3)
    first = claim_unit(store, "w1")
    assert store.release_unit(tid, first.unit.index, "w1")
    again = claim_unit(store, "w2")
    assert (again.unit.index, again.unit.attempts) == (0, 1)
    claim_unit(store, "w3")
    assert store.fail_unit(tid, 0, "w2", TranscriptionError("engine_error", "engine down"))
    failed = store.get_transcription("t1", tid)
    assert failed.status is TranscriptionStatus.FAILED
    assert failed.error == TranscriptionError("engine_error", "engine down")
    assert store.complete_unit(tid, 1, "w3", "{}", lease_s=LEASE) is UnitOutcome.LOST
    assert store.claim_work("w4", lease_s=LEASE, max_attempts=3) is None
    assert failed_events(store, tid) == ["engine_error"]


def test_deleting_a_split_job_removes_its_units(store: Store) -> None:  # noqa: F811
    tid = split_job(store, 3)
    claim_unit(store, "w1")
    store.delete_transcription("t1", tid)
    assert not store.heartbeat_unit(tid, 0, "w1", lease_s=LEASE)
    assert store.complete_unit(tid, 0, "w1", "{}", lease_s=LEASE) is UnitOutcome.LOST
    assert store.claim_work("w2", lease_s=LEASE, max_attempts=3) is None
    assert store.list_units(tid) == []
    assert store.load_chunks(tid) == {}


def test_a_short_job_goes_before_a_long_jobs_remaining_units(store: Store) -> None:  # noqa: F811
    long_id = split_job(store, 6)
    claim_unit(store, "w1")
    short = job(offset=10)
    store.add_transcription(short)
    got = store.claim_work("w2", lease_s=LEASE, max_attempts=3)
    assert isinstance(got, Transcription) and got.id == short.id
    assert claim_unit(store, "w3").job.id == long_id


def test_a_job_queued_after_the_last_service_waits_its_turn(store: Store) -> None:  # noqa: F811
    long_id = split_job(store, 6)  # published, nothing in flight (no worker was free)
    late = job(offset=10)
    store.add_transcription(late)
    assert claim_unit(store, "w1").job.id == long_id
    got = store.claim_work("w2", lease_s=LEASE, max_attempts=3)
    assert isinstance(got, Transcription) and got.id == late.id


def test_a_job_queued_while_a_unit_runs_goes_before_the_next_unit(store: Store) -> None:  # noqa: F811
    long_id = split_job(store, 6)
    claim_unit(store, "w1")
    short = job(offset=10)
    store.add_transcription(short)  # arrives while unit 0 runs
    assert store.complete_unit(long_id, 0, "w1", "{}", lease_s=LEASE) is UnitOutcome.DONE
    got = store.claim_work("w1", lease_s=LEASE, max_attempts=3)  # one worker, nothing in flight
    assert isinstance(got, Transcription) and got.id == short.id


def test_two_long_jobs_share_the_workers(store: Store) -> None:  # noqa: F811
    jobs = [job(offset=0), job(offset=1)]
    for t in jobs:
        store.add_transcription(t)
    for i, t in enumerate(jobs):
        assert store.claim_work(f"p{i}", lease_s=LEASE, max_attempts=3) is not None
        assert store.publish_units(t.id, f"p{i}", plan(4))
    first, second = (t.id for t in jobs)
    claims = [claim_unit(store, f"w{i}") for i in range(4)]
    assert [c.job.id for c in claims] == [first, second, first, second]
    # One worker alone alternates too: each completion makes the other job due.
    for c in claims:
        store.complete_unit(c.job.id, c.unit.index, c.unit.lease_owner or "", "{}", lease_s=LEASE)
    order = []
    for _ in range(4):
        c = claim_unit(store, "solo")
        order.append(c.job.id)
        store.complete_unit(c.job.id, c.unit.index, "solo", "{}", lease_s=LEASE)
    assert order == [first, second, first, second]
