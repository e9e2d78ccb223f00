"""The webhook store contract (endpoints, outbox, deliveries) against every backend."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from postcall.domain import TranscriptionError, new_id
from postcall.errors import InvalidInput, NotFound
from postcall.store.base import Store
from postcall.store.webhooks_base import ts_to_dt
from postcall.webhooks import (
    EVENT_TYPES,
    Attempt,
    DeliveryStatus,
    Endpoint,
    new_secret,
)
from tests.contract.test_store import RESULT, Clock, StoreFactory, job, recording


def endpoint(tenant: str = "t1", events: tuple[str, ...] = EVENT_TYPES) -> Endpoint:
    now = ts_to_dt(1_700_000_000.0)
    return Endpoint(
        id=new_id("we"),
        tenant=tenant,
        url="https://hooks.example.com/in",
        events=events,
        secret=new_secret(),
        created_at=now,
        updated_at=now,
        description="ci",
    )


def attempt(ok: bool, code: int | None = 200, error: str | None = None) -> Attempt:
    return Attempt(1, ts_to_dt(1_700_000_000.5), ok, code, 12.5, error)


def drain_events(store: Store) -> list[tuple[str, str | None, str, str | None]]:
    return [(e.type, e.transcription_id, e.code, e.sub_code) for e in store.pending_events(100)]


def test_endpoint_round_trip_and_tenancy(store: Store) -> None:
    e = endpoint()
    store.add_endpoint(e)
    assert store.get_endpoint("t1", e.id) == e
    assert store.list_endpoints("t1") == [e]
    with pytest.raises(NotFound):
        store.get_endpoint("t2", e.id)
    assert store.list_endpoints("t2") == []
    with pytest.raises(NotFound):
        store.save_endpoint(replace(e, tenant="t2", url="https://evil.example/"))
    with pytest.raises(NotFound):
        store.delete_endpoint("t2", e.id)
    rotated = replace(
        e,
        secret=new_secret(),
        previous_secret=e.secret,
        previous_expires_at=e.created_at + timedelta(hours=1),
        enabled=False,
        disabled_reason="gone",
        events=("transcript.done",),
    )
    store.save_endpoint(rotated)
    assert store.get_endpoint("t1", e.id) == rotated
    store.delete_endpoint("t1", e.id)
    with pytest.raises(NotFound):
        store.get_endpoint("t1", e.id)
    assert store.list_endpoints("t1") == []
    with pytest.raises(NotFound):
        store.save_endpoint(rotated)


def test_events_are_written_with_the_changes_that_cause_them(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    ok, bad = job(offset=0), job(offset=1)
    store.add_transcription(ok)
    store.add_transcription(bad)
    assert drain_events(store) == [("recording.done", None, "done", None)]
    store.claim("w1", lease_s=60, max_attempts=3)
    store.claim("w1", lease_s=60, max_attempts=3)
    assert store.complete(ok.id, "w1", RESULT)
    assert store.fail(bad.id, "w1", TranscriptionError("no_speech", "nothing said"))
    # A refused (fenced) completion writes nothing.
    assert not store.complete(ok.id, "w1", RESULT)
    events = store.pending_events(100)
    assert [(e.type, e.transcription_id, e.code, e.sub_code) for e in events] == [
        ("recording.done", None, "done", None),
        ("transcript.done", ok.id, "done", None),
        ("transcript.failed", bad.id, "failed", "no_speech"),
    ]
    assert {e.tenant for e in events} == {"t1"}
    assert {e.recording_id for e in events} == {"rec_1"}
    assert len({e.id for e in events}) == 3 and all(e.id.startswith("evt_") for e in events)
    assert events[1].updated_at == store.get_transcription("t1", ok.id).updated_at


def test_a_job_given_up_as_worker_lost_emits_transcript_failed(store: Store, clock: Clock) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=10, max_attempts=1)
    clock.advance(11)
    assert store.claim("w2", lease_s=10, max_attempts=1) is None
    assert drain_events(store)[-1] == ("transcript.failed", t.id, "failed", "worker_lost")


def test_a_release_emits_nothing(store: Store) -> None:
    store.add_recording(recording())
    t = job()
    store.add_transcription(t)
    store.claim("w1", lease_s=60, max_attempts=3)
    assert store.release(t.id, "w1")
    assert [e[0] for e in drain_events(store)] == ["recording.done"]


def test_fan_out_once_and_deliveries_carry_the_payload(store: Store) -> None:
    e1, e2 = endpoint(), endpoint()
    store.add_endpoint(e1)
    store.add_endpoint(e2)
    store.add_recording(recording())
    (event,) = store.pending_events(10)
    assert store.fan_out(event.id, '{"event":"recording.done"}', [e1.id, e2.id])
    assert not store.fan_out(event.id, "{}", [e1.id])  # a second dispatcher: no-op
    assert store.pending_events(10) == []
    page = store.list_deliveries("t1", event_id=event.id, limit=10, cursor=None)
    assert {d.endpoint_id for d in page.items} == {e1.id, e2.id}
    for d in page.items:
        assert d.event_id == event.id and d.event_type == "recording.done"
        assert json.loads(d.payload) == {"event": "recording.done"}
        assert d.status is DeliveryStatus.PENDING and d.attempts == 0 and d.log == ()
    assert store.list_deliveries("t2", event_id=event.id, limit=10, cursor=None).items == []


def test_claim_lease_retry_and_log(store: Store, clock: Clock) -> None:
    e = endpoint()
    store.add_endpoint(e)
    store.add_recording(recording())
    (event,) = store.pending_events(10)
    store.fan_out(event.id, "{}", [e.id])
    d = store.claim_delivery("d1", lease_s=30, max_attempts=3)
    assert d is not None and d.attempts == 1
    assert store.claim_delivery("d2", lease_s=30, max_attempts=3) is None  # leased
    retry = ts_to_dt(clock.now + 5)
    assert store.finish_attempt(d.id, "d1", attempt(False, 500, "HTTP 500"), retry_at=retry)
    assert not store.finish_attempt(d.id, "d1", attempt(True), retry_at=None)  # lease ended
    assert store.claim_delivery("d2", lease_s=30, max_attempts=3) is None  # not due yet
    clock.advance(5)
    again = store.claim_delivery("d2", lease_s=30, max_attempts=3)
    assert again is not None and again.id == d.id and again.attempts == 2
    assert store.finish_attempt(d.id, "d2", attempt(True), retry_at=None)
    done = store.get_delivery("t1", d.id)
    assert done.status is DeliveryStatus.SUCCEEDED
    assert [(a.number, a.succeeded, a.response_code, a.error) for a in done.log] == [
        (1, False, 500, "HTTP 500"),
        (2, True, 200, None),
    ]
    assert done.log[0].latency_ms == 12.5
    with pytest.raises(NotFound):
        store.get_delivery("t2", d.id)


def test_a_postponed_delivery_is_due_again_later_and_not_counted(
    store: Store, clock: Clock
) -> None:
    e = endpoint()
    store.add_endpoint(e)
    store.add_recording(recording())
    (event,) = store.pending_events(10)
    store.fan_out(event.id, "{}", [e.id])
    d = store.claim_delivery("d1", lease_s=30, max_attempts=1)
    assert d is not None and d.attempts == 1
    later = ts_to_dt(clock.now + 2)
    assert not store.postpone_delivery(d.id, "someone-else", until=later)
    assert store.postpone_delivery(d.id, "d1", until=later)
    assert not store.postpone_delivery(d.id, "d1", until=later)  # no longer held
    assert store.claim_delivery("d2", lease_s=30, max_attempts=1) is None  # not due yet
    waiting = store.get_delivery("t1", d.id)
    assert waiting.status is DeliveryStatus.PENDING and waiting.attempts == 0
    assert waiting.log == ()
    clock.advance(2)
    # max_attempts=1: had the postponed claim counted, it would now fail unsent.
    again = store.claim_delivery("d2", lease_s=30, max_attempts=1)
    assert again is not None and again.id == d.id and again.attempts == 1
    assert store.finish_attempt(d.id, "d2", attempt(True), retry_at=None)
    assert store.get_delivery("t1", d.id).status is DeliveryStatus.SUCCEEDED


def test_a_dead_dispatchers_delivery_is_claimed_after_its_lease(store: Store, clock: Clock) -> None:
    e = endpoint()
    store.add_endpoint(e)
    store.add_recording(recording())
    (event,) = store.pending_events(10)
    store.fan_out(event.id, "{}", [e.id])
    first = store.claim_delivery("dead", lease_s=30, max_attempts=2)
    assert first is not None
    clock.advance(31)
    second = store.claim_delivery("alive", lease_s=30, max_attempts=2)
    assert second is not None and second.id == first.id and second.attempts == 2
    assert not store.finish_attempt(first.id, "dead", attempt(True), retry_at=None)
    clock.advance(31)  # died again, attempts used up: it fails, with a log line
    assert store.claim_delivery("third", lease_s=30, max_attempts=2) is None
    gone = store.get_delivery("t1", first.id)
    assert gone.status is DeliveryStatus.FAILED
    assert gone.log[-1].error is not None and "stopped" in gone.log[-1].error


def test_giving_up_and_resending(store: Store, clock: Clock) -> None:
    e = endpoint()
    store.add_endpoint(e)
    store.add_recording(recording())
    (event,) = store.pending_events(10)
    store.fan_out(event.id, "{}", [e.id])
    d = store.claim_delivery("d1", lease_s=30, max_attempts=3)
    assert d is not None
    assert store.finish_attempt(d.id, "d1", attempt(False, 410, "HTTP 410"), retry_at=None)
    assert store.get_delivery("t1", d.id).status is DeliveryStatus.FAILED
    assert store.claim_delivery("d1", lease_s=30, max_attempts=3) is None
    with pytest.raises(NotFound):
        store.resend("t2", d.id)
    again = store.resend("t1", d.id)
    assert again.status is DeliveryStatus.PENDING and again.attempts == 0
    claimed = store.claim_delivery("d2", lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.id == d.id and claimed.attempts == 1
    assert store.finish_attempt(d.id, "d2", attempt(True), retry_at=None)
    assert [a.number for a in store.get_delivery("t1", d.id).log] == [1, 2]


def test_delivery_listings_paginate_newest_first(store: Store) -> None:
    e = endpoint()
    store.add_endpoint(e)
    for i in range(5):
        store.add_recording(recording(f"rec_{i}", offset=i))
    for ev in store.pending_events(10):
        store.fan_out(ev.id, "{}", [e.id])
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_deliveries("t1", endpoint_id=e.id, limit=2, cursor=cursor)
        seen += [d.id for d in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert len(seen) == 5 == len(set(seen))
    created = [store.get_delivery("t1", i).created_at for i in seen]
    assert created == sorted(created, reverse=True)
    assert store.list_deliveries("t2", endpoint_id=e.id, limit=10, cursor=None).items == []
    with pytest.raises(InvalidInput):
        store.list_deliveries("t1", endpoint_id=e.id, limit=2, cursor="garbage")


def test_concurrent_dispatchers_claim_each_delivery_once(make_store: StoreFactory) -> None:
    clock = Clock()
    setup = make_store(clock)
    e = endpoint()
    setup.add_endpoint(e)
    for i in range(40):
        setup.add_recording(recording(f"rec_{i}", offset=i))
    for ev in setup.pending_events(100):
        assert setup.fan_out(ev.id, "{}", [e.id])
    got: list[str] = []
    lock = threading.Lock()

    def drain(name: str) -> None:
        while (d := setup.claim_delivery(name, lease_s=60, max_attempts=3)) is not None:
            with lock:
                got.append(d.id)

    threads = [threading.Thread(target=drain, args=(f"d{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 40 == len(set(got))
