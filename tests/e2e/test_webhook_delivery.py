"""Webhook delivery against a real receiver that verifies with ``standardwebhooks``:
signatures, retries, Retry-After, 410, redirects. A real dispatcher on a real SQLite
store; the schedule is shrunk through its config."""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from postcall.delivery import Dispatcher, DispatcherConfig
from postcall.domain import AudioStreamInfo, MediaInfo, Recording, new_id, utcnow
from postcall.outbound import OutboundPolicy, parse_networks
from postcall.store.base import Page
from postcall.store.sqlite import SqliteStore
from postcall.webhook_service import WebhookService
from postcall.webhooks import Delivery, DeliveryStatus, new_secret, sign_headers
from tests.e2e.receiver import HOLD, Answer, Received, Receiver, Tripwire, running
from tests.helpers import wait_for

LOOPBACK = OutboundPolicy(parse_networks("127.0.0.0/8"))
FAST = DispatcherConfig(
    schedule=(0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1),
    timeout_s=2,
    lease_s=3,
    poll_s=0.05,
    concurrency=2,
)


def add_recording(store: SqliteStore, tenant: str = "t1") -> str:
    rec = Recording(
        id=new_id("rec"),
        tenant=tenant,
        created_at=utcnow(),
        media_key="media/x",
        filename="call.wav",
        content_type="audio/wav",
        size=10,
        media=MediaInfo("wav", 1.0, (AudioStreamInfo(0, "pcm_s16le", 1, 16000, 1.0),)),
        metadata={"crm": "42"},
    )
    store.add_recording(rec)
    return rec.id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db")
    yield s
    s.close()


@pytest.fixture
def dispatcher(store: SqliteStore) -> Iterator[Dispatcher]:
    d = Dispatcher(store, LOOPBACK, FAST)
    d.start()
    yield d
    d.stop(grace_s=5)


def random_payload(rng: random.Random) -> bytes:
    def text() -> str:
        return "".join(rng.choices(string.printable + "éü漢字🙂", k=rng.randint(0, 40)))

    doc = {text(): [text(), rng.random(), rng.randint(-(10**9), 10**9), None] for _ in range(3)}
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()


def test_a_thousand_signed_payloads_verify_and_tampering_does_not() -> None:
    secret = new_secret()
    rng = random.Random(4)
    with running(Receiver(secrets=[secret])) as rx, httpx.Client(timeout=10) as client:
        sent = []
        for _ in range(1000):
            body, msg_id = random_payload(rng), new_id("evt")
            headers = sign_headers([secret], msg_id, int(time.time()), body)
            client.post(rx.url + "/hook", content=body, headers=headers)
            sent.append(msg_id)
        assert [r.id for r in rx.received] == sent
        assert all(r.verified for r in rx.received)

        body = random_payload(rng)
        headers = sign_headers([secret], "evt_x", int(time.time()), body)
        flipped = bytearray(body)
        flipped[len(flipped) // 2] ^= 0x01
        client.post(rx.url + "/hook", content=bytes(flipped), headers=headers)
        stale = sign_headers([secret], "evt_y", int(time.time()) - 3600, body)
        client.post(rx.url + "/hook", content=body, headers=stale)
        other = sign_headers([new_secret()], "evt_z", int(time.time()), body)
        client.post(rx.url + "/hook", content=body, headers=other)
        assert [r.verified for r in rx.received[-3:]] == [False, False, False]


def test_during_a_rotation_both_secrets_verify(store: SqliteStore, dispatcher: Dispatcher) -> None:
    hooks = WebhookService(store, LOOPBACK)
    with running(Receiver()) as rx:
        ep = hooks.create_endpoint("t1", rx.url + "/in")
        old = ep.secret
        new = hooks.rotate_secret("t1", ep.id, overlap_s=3600).secret
        add_recording(store)
        (got,) = wait_for(rx.delivered, timeout=10, what="the delivery")
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        for secret in (old, new):
            rx.secrets = [secret]
            assert rx.verify(got.body, got.headers)
        # Without an overlap only the new secret signs.
        newest = hooks.rotate_secret("t1", ep.id, overlap_s=0).secret
        add_recording(store)
        wait_for(lambda: len(rx.delivered()) == 2, timeout=10, what="the second delivery")
        last = rx.delivered()[-1]
        assert len(last.headers["webhook-signature"].split(" ")) == 1
        rx.secrets = [newest]
        assert rx.verify(last.body, last.headers)
        rx.secrets = [new]
        assert not rx.verify(last.body, last.headers)


def test_a_failing_receiver_gets_every_event_once_it_recovers(
    store: SqliteStore, dispatcher: Dispatcher
) -> None:
    hooks = WebhookService(store, LOOPBACK)
    failing_until = 8

    def respond(n: int, _r: object) -> tuple[int, dict[str, str]]:
        return (500, {}) if n <= failing_until else (200, {})

    with running(Receiver(respond=respond)) as rx:
        ep = hooks.create_endpoint("t1", rx.url + "/in", events=["recording.done"])
        rx.secrets = [ep.secret]
        recordings = [add_recording(store) for _ in range(3)]
        wait_for(lambda: len(rx.delivered()) >= 3, timeout=20, what="all three events")
        by_id: dict[str, list[bytes]] = {}
        for r in rx.received:
            assert r.verified
            by_id.setdefault(r.id, []).append(r.body)
        assert len(by_id) == 3  # three events, each under one webhook-id on every attempt
        assert sum(len(bodies) for bodies in by_id.values()) >= failing_until + 3
        for bodies in by_id.values():
            assert len(set(bodies)) == 1  # the same body on every attempt
        delivered = {r.json()["data"]["recording"]["id"] for r in rx.delivered()}
        assert delivered == set(recordings)
        assert all(r.json()["data"]["recording"]["metadata"] == {"crm": "42"} for r in rx.received)

        # The dispatcher records an attempt after the receiver has answered it: poll.
        def all_succeeded() -> Page[Delivery] | None:
            page = hooks.endpoint_deliveries("t1", ep.id, limit=10, cursor=None)
            done = {d.status for d in page.items} == {DeliveryStatus.SUCCEEDED}
            return page if done else None

        page = wait_for(all_succeeded, timeout=10, what="every delivery recorded as succeeded")
        codes = [a.response_code for d in page.items for a in d.log]
        assert codes.count(500) == failing_until and codes.count(200) == 3
        assert all(a.latency_ms > 0 for d in page.items for a in d.log)


def test_retry_after_on_429_is_honoured(store: SqliteStore, dispatcher: Dispatcher) -> None:
    hooks = WebhookService(store, LOOPBACK)

    def respond(n: int, _r: object) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "2"}) if n == 1 else (200, {})

    with running(Receiver(respond=respond)) as rx:
        hooks.create_endpoint("t1", rx.url + "/in")
        add_recording(store)
        wait_for(rx.delivered, timeout=10, what="the retried delivery")
        first, second = rx.received
        assert first.id == second.id
        assert second.at - first.at >= 1.9  # not the 0.1 s of the schedule


def test_410_disables_the_endpoint(store: SqliteStore, dispatcher: Dispatcher) -> None:
    hooks = WebhookService(store, LOOPBACK)
    with running(Receiver(respond=lambda n, r: (410, {}))) as rx:
        ep = hooks.create_endpoint("t1", rx.url + "/in")
        add_recording(store)
        wait_for(lambda: not hooks.get_endpoint("t1", ep.id).enabled, timeout=10, what="disabling")
        assert "410" in (hooks.get_endpoint("t1", ep.id).disabled_reason or "")
        (d,) = hooks.endpoint_deliveries("t1", ep.id, limit=10, cursor=None).items
        wait_for(
            lambda: hooks.get_delivery("t1", d.id).status is DeliveryStatus.FAILED,
            timeout=5,
            what="the delivery to fail",
        )
        add_recording(store)  # a later event goes nowhere: the endpoint is disabled
        wait_for(lambda: not store.pending_events(10), timeout=5, what="the fan-out")
        assert len(rx.received) == 1
        assert len(hooks.endpoint_deliveries("t1", ep.id, limit=10, cursor=None).items) == 1


@pytest.mark.parametrize("target", ["metadata", "tripwire"])
def test_a_redirect_is_not_followed(
    store: SqliteStore, dispatcher: Dispatcher, target: str
) -> None:
    hooks = WebhookService(store, LOOPBACK)
    with Tripwire("127.0.0.2") as wire:
        location = (
            "http://169.254.169.254/latest/meta-data/"
            if target == "metadata"
            else f"http://127.0.0.2:{wire.port}/"  # allowed and listening: still not followed
        )
        with running(Receiver(respond=lambda n, r: (302, {"Location": location}))) as rx:
            ep = hooks.create_endpoint("t1", rx.url + "/in")
            add_recording(store)
            wait_for(lambda: len(rx.received) >= 3, timeout=10, what="retries")
            (d,) = hooks.endpoint_deliveries("t1", ep.id, limit=10, cursor=None).items
            assert d.log and all(a.response_code == 302 for a in d.log)
            assert all("not followed" in (a.error or "") for a in d.log)
        assert wire.connections == 0


def test_a_host_resolving_to_loopback_is_refused_at_delivery(store: SqliteStore) -> None:
    hooks = WebhookService(store, LOOPBACK)  # allowed where it was created
    with Tripwire("127.0.0.1") as wire:
        ep = hooks.create_endpoint("t1", f"http://localhost:{wire.port}/in")
        strict = Dispatcher(store, OutboundPolicy(), FAST)  # this one allows nothing private
        add_recording(store)
        assert strict.fan_out() == 1
        assert strict.deliver_one()
        strict.stop(grace_s=1)
        (d,) = hooks.endpoint_deliveries("t1", ep.id, limit=10, cursor=None).items
        assert d.log[0].response_code is None
        assert "no request sent" in (d.log[0].error or "")
        assert d.status is DeliveryStatus.PENDING  # retried on the schedule
    assert wire.connections == 0


def test_a_receiver_that_never_answers_does_not_hold_up_the_others(store: SqliteStore) -> None:
    """Four senders, at most two per endpoint: the stuck endpoint holds two places until
    its requests time out (5 s), and the other endpoint's six deliveries go through the
    other two meanwhile. Without the bound the stuck endpoint would hold all four."""
    config = replace(FAST, concurrency=4, per_endpoint=2, timeout_s=5, lease_s=6, postpone_s=0.1)
    hooks = WebhookService(store, LOOPBACK)

    def respond(_n: int, r: Received) -> Answer:
        return HOLD if r.path == "/stuck" else (200, {})

    d = Dispatcher(store, LOOPBACK, config)
    with running(Receiver(respond=respond)) as rx:
        hooks.create_endpoint("t1", rx.url + "/stuck", events=["recording.done"])
        hooks.create_endpoint("t1", rx.url + "/good", events=["recording.done"])
        for _ in range(6):
            add_recording(store)
        started = time.monotonic()
        d.start()
        try:
            good = wait_for(
                lambda: len([r for r in rx.delivered() if r.path == "/good"]) == 6,
                timeout=4,
                what="every delivery to the answering endpoint, before the stuck ones time out",
            )
            assert good and time.monotonic() - started < 5
            stuck = [r for r in rx.received if r.path == "/stuck"]
            assert len(stuck) == 2  # never more than two in flight to it
            assert all(r.answered is None for r in stuck)
        finally:
            rx.release()
            d.stop(grace_s=5)
