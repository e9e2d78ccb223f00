"""What only the Redis store has: stream pointers, reconcile, many clients at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from postcall.domain import TranscriptionStatus
from postcall.store.redis import RedisStore
from tests.contract.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.contract.test_store import RESULT, Clock, job, recording

STREAM = "postcall:queue"
GROUP = "workers"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:  # noqa: F811
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_url: str, clock: Clock) -> Iterator[RedisStore]:  # noqa: F811
    s = RedisStore.from_url(redis_url, clock=clock)
    yield s
    s.close()


def pending(raw: redis.Redis) -> int:
    if not raw.exists(STREAM):
        return 0
    summary = raw.xpending(STREAM, GROUP)
    return int(summary["pending"])


def test_reconcile_after_the_stream_is_lost(store: RedisStore, raw: redis.Redis) -> None:
    store.add_recording(recording())
    jobs = [job(offset=i) for i in range(4)]
    for j in jobs:
        store.add_transcription(j)
    running = store.claim("w0", lease_s=60, max_attempts=3)
    assert running is not None and running.id == jobs[0].id
    assert store.reconcile() == 0  # every queued job still has its pointer

    raw.delete(STREAM)  # the hashes survive, the pointers (and the group) do not
    assert store.queue_depth() == 3
    assert store.reconcile() == 3
    assert store.reconcile() == 0  # idempotent: pointers are live again
    assert raw.xlen(STREAM) == 3

    claimed = [store.claim(f"w{i}", lease_s=60, max_attempts=3) for i in range(1, 5)]
    assert [c.id if c else None for c in claimed] == [j.id for j in jobs[1:]] + [None]
    # The job that was running when the stream went keeps working, fenced as before.
    assert store.heartbeat(jobs[0].id, "w0", progress=0.5, lease_s=60)
    assert store.complete(jobs[0].id, "w0", RESULT)
    for i, j in enumerate(jobs[1:], start=1):
        assert store.complete(j.id, f"w{i}", RESULT)
    assert raw.xlen(STREAM) == 0 and pending(raw) == 0


def test_claim_repoints_a_stranded_job_without_reconcile(
    store: RedisStore, raw: redis.Redis
) -> None:
    store.add_recording(recording())
    first, second = job(offset=0), job(offset=1)
    store.add_transcription(first)
    raw.delete(STREAM)
    store.add_transcription(second)  # has a pointer; ``first`` does not
    got = [store.claim(f"w{i}", lease_s=60, max_attempts=3) for i in range(3)]
    assert [g.id if g else None for g in got] == [second.id, first.id, None]
    assert pending(raw) == 2  # each claimed job holds exactly one pending pointer


def test_a_pointer_kept_from_a_lost_stream_never_drops_another_jobs(
    store: RedisStore, raw: redis.Redis
) -> None:
    # Stream entry ids restart with a new stream: the id ``first`` kept from the lost
    # stream can be the one ``second`` gets in the new stream when both are made in the
    # same millisecond. Made so here, whatever the clock did.
    store.add_recording(recording())
    first, second = job(offset=0), job(offset=1)
    store.add_transcription(first)
    raw.delete(STREAM)
    store.add_transcription(second)
    [(_, [(live, _)])] = raw.xread({STREAM: "0"})
    raw.hset(f"postcall:tr:{first.id}", "entry", live)
    got = [store.claim(f"w{i}", lease_s=60, max_attempts=3) for i in range(3)]
    assert [g.id if g else None for g in got] == [second.id, first.id, None]
    assert pending(raw) == 2  # second's pointer survived first's re-pointing
    assert store.heartbeat(second.id, "w0", progress=0.5, lease_s=60)
    assert store.complete(second.id, "w0", RESULT)
    assert store.complete(first.id, "w1", RESULT)
    assert pending(raw) == 0


def test_a_duplicate_pointer_never_hands_a_job_out_twice(
    store: RedisStore, raw: redis.Redis
) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    raw.xadd(STREAM, {"id": t.id})
    raw.xadd(STREAM, {"id": t.id})
    raw.xadd(STREAM, {"id": "tr_unknown"})
    claimed = store.claim("w1", lease_s=60, max_attempts=3)
    assert claimed is not None and claimed.id == t.id
    assert store.claim("w2", lease_s=60, max_attempts=3) is None
    assert raw.xlen(STREAM) == 1 and pending(raw) == 1  # the owner's pointer only

    # Released and pointed at twice again: still one owner at a time.
    assert store.release(t.id, "w1")
    raw.xadd(STREAM, {"id": t.id})
    again = store.claim("w3", lease_s=60, max_attempts=3)
    assert again is not None and again.attempts == 1
    assert store.claim("w4", lease_s=60, max_attempts=3) is None
    assert store.complete(t.id, "w3", RESULT)
    assert raw.xlen(STREAM) == 0 and pending(raw) == 0
    assert store.claim("w5", lease_s=60, max_attempts=3) is None


def test_takeover_moves_the_pointer_and_worker_lost_drops_it(
    store: RedisStore, raw: redis.Redis, clock: Clock
) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=10, max_attempts=2)
    assert [c["name"] for c in raw.xinfo_consumers(STREAM, GROUP)] == ["w1"]
    clock.advance(11)
    taken = store.claim("w2", lease_s=10, max_attempts=2)
    assert taken is not None and taken.attempts == 2
    owners = raw.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert [p["consumer"] for p in owners] == ["w2"]
    assert [c["name"] for c in raw.xinfo_consumers(STREAM, GROUP)] == ["w2"]
    clock.advance(11)
    assert store.claim("w3", lease_s=10, max_attempts=2) is None
    assert store.get_transcription("t1", t.id).status is TranscriptionStatus.FAILED
    assert raw.xlen(STREAM) == 0 and pending(raw) == 0
    assert raw.zcard("postcall:leases") == 0
    assert raw.xinfo_consumers(STREAM, GROUP) == []


def test_concurrent_claims_from_separate_clients(redis_url: str) -> None:  # noqa: F811
    clock = Clock()
    setup = RedisStore.from_url(redis_url, clock=clock)
    setup.add_recording(recording())
    ids = []
    for i in range(120):
        t = job(offset=i)
        ids.append(t.id)
        setup.add_transcription(t)
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    for tid in ids[::2]:  # every other job gets a second pointer
        raw.xadd(STREAM, {"id": tid})
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def drain(name: str) -> None:
        store = RedisStore.from_url(redis_url, clock=clock)
        start.wait()
        try:
            while (claimed := store.claim(name, lease_s=60, max_attempts=3)) is not None:
                assert store.complete(claimed.id, name, RESULT)
                with lock:
                    got.append(claimed.id)
        finally:
            store.close()

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert sorted(got) == sorted(ids)  # every job once, none twice
    assert setup.queue_depth() == 0
    assert raw.xlen(STREAM) == 0 and pending(raw) == 0
    raw.close()
    setup.close()


def test_namespaces_do_not_share_anything(redis_url: str) -> None:  # noqa: F811
    clock = Clock()
    a = RedisStore(redis_url, clock=clock, namespace="a")
    b = RedisStore(redis_url, clock=clock, namespace="b")
    a.add_recording(recording())
    b.add_recording(recording())  # no Conflict
    a.add_transcription(job())
    assert b.queue_depth() == 0
    assert b.claim("w1", lease_s=60, max_attempts=3) is None
    assert a.claim("w1", lease_s=60, max_attempts=3) is not None
    a.close()
    b.close()


def test_a_given_client_is_left_open(redis_url: str) -> None:  # noqa: F811
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client)
    store.add_api_key("f" * 64, name="ci", tenant="acme")
    store.close()
    assert client.ping()
    client.close()


def test_from_url_wants_a_redis_url() -> None:
    with pytest.raises(ValueError):
        RedisStore.from_url("sqlite:///x.db")
