"""The store contract: the same tests against every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postcall.domain import (
    AudioStreamInfo,
    MediaInfo,
    Recording,
    Transcription,
    TranscriptionError,
    TranscriptionOptions,
    TranscriptionResult,
    TranscriptionStatus,
    new_id,
)
from postcall.errors import Conflict, InvalidInput, NotFound
from postcall.store.base import Store
from postcall.store.redis import RedisStore
from postcall.store.sqlite import SqliteStore
from tests.contract.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreFactory = Callable[[Clock], Store]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made: list[Store] = []
    # Requested here, not as a parameter, so that SQLite runs never start redis-server.
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def factory(clock: Clock) -> Store:
        if request.param == "sqlite":
            store: Store = SqliteStore(tmp_path / "store.db", clock=clock)
        elif request.param == "redis":
            store = RedisStore.from_url(url, clock=clock)
        else:  # pragma: no cover - more backends plug in here
            raise AssertionError(request.param)
        made.append(store)
        return store

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(make_store: StoreFactory, clock: Clock) -> Store:
    return make_store(clock)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def recording(rec_id: str = "rec_1", tenant: str = "t1", offset: int = 0) -> Recording:
    return Recording(
        id=rec_id,
        tenant=tenant,
        created_at=T0 + timedelta(seconds=offset),
        media_key="media/" + "ab" * 16,
        filename="call.wav",
        content_type="audio/wav",
        size=1234,
        media=MediaInfo("wav", 12.5, (AudioStreamInfo(0, "pcm_s16le", 2, 16000, 12.5),)),
        metadata={"participants": [{"id": "1", "name": "Ada"}]},
    )


def job(rec_id: str = "rec_1", tenant: str = "t1", offset: int = 0) -> Transcription:
    at = T0 + timedelta(seconds=offset)
    return Transcription(
        id=new_id("tr"),
        recording_id=rec_id,
        tenant=tenant,
        status=TranscriptionStatus.QUEUED,
        options=TranscriptionOptions(language=None),
        created_at=at,
        updated_at=at,
    )


RESULT = TranscriptionResult(language="en", duration=12.5, segment_count=3, document_key="d/1")


def test_recording_round_trip(store: Store) -> None:
    rec = recording()
    store.add_recording(rec)
    assert store.get_recording("t1", "rec_1") == rec


def test_recording_id_taken(store: Store) -> None:
    store.add_recording(recording())
    with pytest.raises(Conflict):
        store.add_recording(recording())


def test_other_tenant_sees_nothing(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    with pytest.raises(NotFound):
        store.get_recording("t2", "rec_1")
    with pytest.raises(NotFound):
        store.get_transcription("t2", t.id)
    with pytest.raises(NotFound):
        store.delete_transcription("t2", t.id)
    assert store.list_recordings("t2", limit=10, cursor=None).items == []
    # The same client-chosen id can exist in two tenants.
    store.add_recording(recording(tenant="t2"))


def test_recordings_paginate_newest_first(store: Store) -> None:
    for i in range(5):
        store.add_recording(recording(f"rec_{i}", offset=i))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_recordings("t1", limit=2, cursor=cursor)
        seen += [r.id for r in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"rec_{i}" for i in reversed(range(5))]
    assert pages == 3


def test_bad_cursor(store: Store) -> None:
    with pytest.raises(InvalidInput):
        store.list_recordings("t1", limit=2, cursor="garbage")


def test_transcription_needs_recording(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_transcription(job())


def test_delete_recording_takes_its_transcriptions(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.save_chunk(t.id, 0, "{}")
    rec, trs = store.delete_recording("t1", "rec_1")
    assert rec.id == "rec_1"
    assert [x.id for x in trs] == [t.id]
    with pytest.raises(NotFound):
        store.get_transcription("t1", t.id)
    assert store.load_chunks(t.id) == {}
    with pytest.raises(NotFound):
        store.delete_recording("t1", "rec_1")


def test_claim_is_fifo_and_exclusive(store: Store) -> None:
    store.add_recording(recording())
    jobs = [job(offset=i) for i in range(3)]
    for j in jobs:
        store.add_transcription(j)
    assert store.queue_depth() == 3
    claimed = [store.claim(f"w{i}", lease_s=60, max_attempts=3) for i in range(4)]
    assert [c.id if c else None for c in claimed] == [j.id for j in jobs] + [None]
    first = claimed[0]
    assert first is not None
    assert first.status is TranscriptionStatus.PROCESSING
    assert first.attempts == 1
    assert store.queue_depth() == 0


def test_complete_is_fenced_by_the_lease(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    assert store.claim("w1", lease_s=60, max_attempts=3) is not None
    clock.advance(30)
    assert store.heartbeat(t.id, "w1", progress=0.5, lease_s=60)
    assert store.get_transcription("t1", t.id).progress == 0.5
    clock.advance(59)  # renewed: still owned
    assert store.claim("w2", lease_s=60, max_attempts=3) is None
    clock.advance(2)  # expired now
    taken = store.claim("w2", lease_s=60, max_attempts=3)
    assert taken is not None and taken.id == t.id and taken.attempts == 2
    # The first worker's late result is refused; the owner's is kept.
    assert not store.heartbeat(t.id, "w1", progress=0.9, lease_s=60)
    assert not store.complete(t.id, "w1", RESULT)
    assert not store.fail(t.id, "w1", TranscriptionError("engine_error", "late"))
    assert store.complete(t.id, "w2", RESULT)
    done = store.get_transcription("t1", t.id)
    assert done.status is TranscriptionStatus.COMPLETED
    assert done.result == RESULT
    assert done.progress == 1.0
    # A terminal job is never claimed, completed or failed again.
    assert store.claim("w3", lease_s=60, max_attempts=3) is None
    assert not store.fail(t.id, "w2", TranscriptionError("engine_error", "twice"))


def test_fail_records_the_error(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=60, max_attempts=3)
    assert store.fail(t.id, "w1", TranscriptionError("no_speech", "nothing said"))
    failed = store.get_transcription("t1", t.id)
    assert failed.status is TranscriptionStatus.FAILED
    assert failed.error == TranscriptionError("no_speech", "nothing said")


def test_release_does_not_count_an_attempt(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=60, max_attempts=3)
    assert store.release(t.id, "w1")
    again = store.get_transcription("t1", t.id)
    assert again.status is TranscriptionStatus.QUEUED and again.attempts == 0
    assert not store.release(t.id, "w1")
    claimed = store.claim("w2", lease_s=60, max_attempts=3)
    assert claimed is not None and claimed.attempts == 1


def test_job_that_keeps_losing_its_worker_fails(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    bad, good = job(offset=0), job(offset=1)
    store.add_transcription(bad)
    store.add_transcription(good)
    for attempt in range(3):
        claimed = store.claim(f"w{attempt}", lease_s=10, max_attempts=3)
        assert claimed is not None and claimed.id == bad.id
        clock.advance(11)  # the worker died: its lease runs out
    nxt = store.claim("w9", lease_s=10, max_attempts=3)
    assert nxt is not None and nxt.id == good.id
    lost = store.get_transcription("t1", bad.id)
    assert lost.status is TranscriptionStatus.FAILED
    assert lost.error is not None and lost.error.code == "worker_lost"


def test_deleted_job_cannot_be_completed(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=60, max_attempts=3)
    store.delete_transcription("t1", t.id)
    assert not store.heartbeat(t.id, "w1", progress=0.1, lease_s=60)
    assert not store.complete(t.id, "w1", RESULT)


def test_concurrent_claims_hand_each_job_out_once(make_store: StoreFactory) -> None:
    clock = Clock()
    setup = make_store(clock)
    setup.add_recording(recording())
    ids = set()
    for i in range(60):
        t = job(offset=i)
        ids.add(t.id)
        setup.add_transcription(t)
    got: list[str] = []
    lock = threading.Lock()

    def drain(name: str) -> None:
        while (claimed := setup.claim(name, lease_s=60, max_attempts=3)) is not None:
            with lock:
                got.append(claimed.id)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(ids)


def test_chunks_are_kept_per_index(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.save_chunk(t.id, 0, "a")
    store.save_chunk(t.id, 1, "b")
    store.save_chunk(t.id, 1, "c")
    assert store.load_chunks(t.id) == {0: "a", 1: "c"}


def test_api_keys(store: Store) -> None:
    assert store.tenant_for_key("f" * 64) is None
    store.add_api_key("f" * 64, name="ci", tenant="acme")
    assert store.tenant_for_key("f" * 64) == "acme"


def test_list_transcriptions_of_a_recording(store: Store) -> None:
    store.add_recording(recording("a"))
    store.add_recording(recording("b"))
    ta, tb = job("a"), job("b", offset=1)
    store.add_transcription(ta)
    store.add_transcription(tb)
    page = store.list_transcriptions("t1", recording_id="a", limit=10, cursor=None)
    assert [t.id for t in page.items] == [ta.id]
    everything = store.list_transcriptions("t1", recording_id=None, limit=10, cursor=None)
    assert [t.id for t in everything.items] == [tb.id, ta.id]


def test_listings_break_ties_by_id(store: Store) -> None:
    # Same created_at everywhere: the order (and the cursor) falls back to the id.
    for name in ["b", "d", "a", "e", "c"]:
        store.add_recording(recording(f"rec_{name}"))
        store.add_transcription(job(f"rec_{name}"))
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_recordings("t1", limit=2, cursor=cursor)
        seen += [r.id for r in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == ["rec_e", "rec_d", "rec_c", "rec_b", "rec_a"]
    everything = store.list_transcriptions("t1", recording_id=None, limit=10, cursor=None)
    paged: list[str] = []
    cursor = None
    while True:
        tpage = store.list_transcriptions("t1", recording_id=None, limit=3, cursor=cursor)
        paged += [t.id for t in tpage.items]
        if (cursor := tpage.next_cursor) is None:
            break
    assert paged == [t.id for t in everything.items]
    assert paged == sorted(paged, reverse=True)


def test_transcriptions_of_a_recording_paginate(store: Store) -> None:
    store.add_recording(recording("a"))
    store.add_recording(recording("b"))
    mine = [job("a", offset=i) for i in range(5)]
    for i, t in enumerate(mine):
        store.add_transcription(t)
        store.add_transcription(job("b", offset=i))
    first = store.list_transcriptions("t1", recording_id="a", limit=3, cursor=None)
    assert first.next_cursor is not None
    rest = store.list_transcriptions("t1", recording_id="a", limit=3, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert [t.id for t in first.items + rest.items] == [t.id for t in reversed(mine)]


def test_tenant_and_id_never_share_a_record(store: Store) -> None:
    store.add_recording(recording("b:c", tenant="a"))
    store.add_recording(recording("c", tenant="a:b"))  # no Conflict: another record
    assert store.get_recording("a", "b:c").tenant == "a"
    assert store.get_recording("a:b", "c").tenant == "a:b"
    assert [r.id for r in store.list_recordings("a:b", limit=10, cursor=None).items] == ["c"]


def test_deleted_queued_job_is_never_claimed(store: Store) -> None:
    store.add_recording(recording("a"))
    store.add_recording(recording("b"))
    gone, kept = job("a"), job("b", offset=1)
    store.add_transcription(gone)
    store.add_transcription(kept)
    also_gone = job("a", offset=2)
    store.add_transcription(also_gone)
    store.delete_transcription("t1", gone.id)
    store.delete_recording("t1", "a")
    assert store.queue_depth() == 1
    claimed = store.claim("w1", lease_s=60, max_attempts=3)
    assert claimed is not None and claimed.id == kept.id
    assert store.claim("w2", lease_s=60, max_attempts=3) is None
    assert store.queue_depth() == 0


def test_an_expired_lease_fences_its_owner_even_before_a_takeover(
    store: Store, clock: Clock
) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=10, max_attempts=3)
    clock.advance(10)  # the last instant the lease still holds
    assert store.heartbeat(t.id, "w1", progress=0.2, lease_s=10)
    clock.advance(10.5)  # nobody took the job over yet, but the lease is gone
    assert not store.complete(t.id, "w1", RESULT)
    assert not store.release(t.id, "w1")
    assert store.get_transcription("t1", t.id).status is TranscriptionStatus.PROCESSING
    taken = store.claim("w2", lease_s=10, max_attempts=3)
    assert taken is not None and taken.id == t.id and taken.attempts == 2
    assert taken.progress == 0.2


def test_only_the_owner_releases_and_a_released_job_is_claimable(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=60, max_attempts=3)
    assert not store.release(t.id, "w2")
    assert store.queue_depth() == 0
    assert store.release(t.id, "w1")
    assert store.queue_depth() == 1
    assert not store.complete(t.id, "w1", RESULT)
    again = store.claim("w2", lease_s=60, max_attempts=3)
    assert again is not None and again.id == t.id
    assert store.claim("w3", lease_s=60, max_attempts=3) is None
    assert store.complete(t.id, "w2", RESULT)


def test_completion_drops_kept_chunks(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=60, max_attempts=3)
    store.save_chunk(t.id, 0, "a")
    assert store.complete(t.id, "w1", RESULT)
    assert store.load_chunks(t.id) == {}


def test_a_job_lost_for_good_leaves_the_queue(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=10, max_attempts=1)
    clock.advance(11)
    assert store.claim("w2", lease_s=10, max_attempts=1) is None
    lost = store.get_transcription("t1", t.id)
    assert lost.status is TranscriptionStatus.FAILED
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert "claimed 1 times" in lost.error.message
    assert not store.complete(t.id, "w1", RESULT)
    assert store.queue_depth() == 0
    assert store.claim("w3", lease_s=10, max_attempts=3) is None


def test_api_keys_are_listed_touched_and_revoked(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    store.add_api_key("a" * 64, name="ci", tenant="acme")
    clock.advance(5)
    store.add_api_key("b" * 64, name="bot", tenant="globex")
    listed = store.list_api_keys()
    assert [(k.name, k.tenant, k.id) for k in listed] == [
        ("ci", "acme", "key_aaaaaaaaaaaa"),
        ("bot", "globex", "key_bbbbbbbbbbbb"),
    ]
    assert listed[0].created_at.timestamp() == 1_700_000_000.0
    assert all(k.last_used_at is None for k in listed)
    clock.advance(60)
    store.touch_api_key("a" * 64)
    used = store.get_api_key("a" * 64)
    assert used is not None and used.last_used_at is not None
    assert used.last_used_at.timestamp() == clock.now
    assert store.delete_api_key("a" * 64) is True
    assert store.delete_api_key("a" * 64) is False
    assert store.get_api_key("a" * 64) is None and store.tenant_for_key("a" * 64) is None
    store.touch_api_key("a" * 64)  # a late touch must not bring a revoked key back
    assert store.get_api_key("a" * 64) is None
    assert [k.name for k in store.list_api_keys()] == ["bot"]


def test_a_key_table_from_before_last_use_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "tenant TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO api_keys VALUES (?,?,?,?)", ("c" * 64, "old", "acme", 1.0))
    db.close()
    store = SqliteStore(path)
    try:
        store.touch_api_key("c" * 64)
        key = store.get_api_key("c" * 64)
        assert key is not None and key.name == "old" and key.last_used_at is not None
    finally:
        store.close()
