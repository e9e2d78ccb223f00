"""Store contract for the Recall-style API: the per-recording transcript limit, transcript
metadata, idempotency keys and server secrets, on every backend."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from postcall.domain import SpeakerMode, TranscriptionOptions
from postcall.errors import LimitReached, NotFound
from postcall.store.base import Store
from postcall.store.idempotency import IdempotencyEntry, StoredResponse
from tests.contract import test_store as contract
from tests.contract.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.contract.test_store import Clock, StoreFactory, job, recording

# The contract suite's fixtures: the same backends, started the same way.
make_store = contract.make_store
clock = contract.clock
store = contract.store

DAY = 24 * 3600.0


def test_metadata_and_requested_options_round_trip(store: Store) -> None:
    store.add_recording(recording())
    options = TranscriptionOptions(
        language="de",
        speakers=SpeakerMode.TIMELINE,
        prompt="Kubernetes, Ada Lovelace",
        requested={"provider": {"postcall": {"language": "de"}}},
    )
    t = replace(job(), options=options, metadata={"team": "sales", "n": [1, 2]})
    store.add_transcription(t)
    assert store.get_transcription("t1", t.id) == t
    listed = store.list_transcriptions("t1", recording_id="rec_1", limit=5, cursor=None)
    assert listed.items == [t]


def test_limit_refuses_the_next_transcript_until_one_is_deleted(store: Store) -> None:
    store.add_recording(recording())
    store.add_recording(recording("rec_2"))
    made = []
    for _ in range(3):
        t = job()
        store.add_transcription(t, limit=3)
        made.append(t)
    with pytest.raises(LimitReached, match="delete one"):
        store.add_transcription(job(), limit=3)
    store.add_transcription(job("rec_2"), limit=3)  # another recording has its own places
    store.delete_transcription("t1", made[0].id)
    store.add_transcription(job(), limit=3)
    with pytest.raises(LimitReached):
        store.add_transcription(job(), limit=3)
    with pytest.raises(NotFound):
        store.add_transcription(job("rec_missing"), limit=3)


def test_limit_holds_under_concurrency(make_store: StoreFactory, clock: Clock) -> None:
    setup = make_store(clock)
    setup.add_recording(recording())
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def create() -> None:  # one store, a connection per thread (SQLite) or a pool (Redis)
        start.wait()
        try:
            setup.add_transcription(job(), limit=10)
            outcome = "ok"
        except LimitReached:
            outcome = "limit"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert outcomes.count("ok") == 10 and outcomes.count("limit") == 40
    page = setup.list_transcriptions("t1", recording_id="rec_1", limit=100, cursor=None)
    assert len(page.items) == 10


def test_idempotency_reserve_replay_and_mismatch(store: Store, clock: Clock) -> None:
    assert store.idempotency_reserve("t1", "k1", "fp-a", lock_s=60) is None
    # In flight: the entry is there without a response, for any fingerprint.
    assert store.idempotency_reserve("t1", "k1", "fp-a", lock_s=60) == IdempotencyEntry(
        "fp-a", None
    )
    assert store.idempotency_reserve("t1", "k1", "fp-b", lock_s=60) == IdempotencyEntry(
        "fp-a", None
    )
    # Keys are per tenant.
    assert store.idempotency_reserve("t2", "k1", "fp-b", lock_s=60) is None
    response = StoredResponse(201, '{"id": "rec_1", "name": "Zoë"}')
    store.idempotency_complete("t1", "k1", "fp-a", response, ttl_s=DAY)
    entry = store.idempotency_reserve("t1", "k1", "fp-a", lock_s=60)
    assert entry == IdempotencyEntry("fp-a", response)
    clock.advance(DAY - 1)
    assert store.idempotency_reserve("t1", "k1", "fp-b", lock_s=60) == entry
    clock.advance(2)  # kept for ttl_s, then the key is new again
    assert store.idempotency_reserve("t1", "k1", "fp-b", lock_s=60) is None


def test_idempotency_release_frees_only_an_unanswered_reservation(
    store: Store, clock: Clock
) -> None:
    assert store.idempotency_reserve("t1", "k", "fp", lock_s=60) is None
    store.idempotency_release("t1", "k", "other-fp")  # not the holder: no effect
    assert store.idempotency_reserve("t1", "k", "fp", lock_s=60) is not None
    store.idempotency_release("t1", "k", "fp")
    assert store.idempotency_reserve("t1", "k", "fp2", lock_s=60) is None
    store.idempotency_complete("t1", "k", "fp2", StoredResponse(202, "{}"), ttl_s=DAY)
    store.idempotency_release("t1", "k", "fp2")  # answered: kept
    entry = store.idempotency_reserve("t1", "k", "fp2", lock_s=60)
    assert entry is not None and entry.response == StoredResponse(202, "{}")


def test_a_dead_reservation_is_taken_over_after_its_lock(store: Store, clock: Clock) -> None:
    assert store.idempotency_reserve("t1", "k", "fp", lock_s=60) is None
    clock.advance(61)
    assert store.idempotency_reserve("t1", "k", "fp", lock_s=60) is None
    # The late first holder cannot overwrite the new reservation's outcome.
    store.idempotency_complete("t1", "k", "fp", StoredResponse(201, "{}"), ttl_s=DAY)
    entry = store.idempotency_reserve("t1", "k", "fp", lock_s=60)
    assert entry is not None and entry.response is not None


def test_concurrent_reservations_let_exactly_one_run(
    make_store: StoreFactory, clock: Clock
) -> None:
    s = make_store(clock)
    won: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def reserve() -> None:
        start.wait()
        entry = s.idempotency_reserve("t1", "same", "fp", lock_s=60)
        with lock:
            won.append(entry is None)

    threads = [threading.Thread(target=reserve) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert won.count(True) == 1


def test_server_secret_is_made_once(make_store: StoreFactory, clock: Clock) -> None:
    a, b = make_store(clock), make_store(clock)
    first = a.server_secret("link-signing", "candidate-1")
    assert first == "candidate-1"
    assert b.server_secret("link-signing", "candidate-2") == "candidate-1"
    assert a.server_secret("other", "x") == "x"
