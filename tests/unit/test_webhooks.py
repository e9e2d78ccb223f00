"""The pure webhook rules: retry decisions, schedules, Retry-After, payloads, secrets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from postcall.settings import Settings
from postcall.webhooks import (
    DEFAULT_SCHEDULE,
    Endpoint,
    Event,
    decide,
    event_payload,
    new_secret,
    parse_retry_after,
    parse_schedule,
    secret_key,
)

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_default_schedule_is_the_documented_one() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert parse_schedule(Settings().webhook_schedule) == DEFAULT_SCHEDULE
    with pytest.raises(ValueError):
        parse_schedule("5,-1")
    with pytest.raises(ValueError):
        Settings(webhook_schedule="soon")
    with pytest.raises(ValueError):
        Settings(webhook_timeout_s=30, webhook_lease_s=20)


def test_decisions() -> None:
    rng = random.Random(1)
    assert decide(204, attempts=1, schedule=DEFAULT_SCHEDULE).succeeded
    gone = decide(410, attempts=1, schedule=DEFAULT_SCHEDULE)
    assert gone.disable_endpoint and gone.delay_s is None and not gone.succeeded
    for attempts in range(1, 8):
        d = decide(500, attempts=attempts, schedule=DEFAULT_SCHEDULE, rng=rng)
        base = DEFAULT_SCHEDULE[attempts]
        assert d.delay_s is not None and 0.8 * base <= d.delay_s <= 1.2 * base
    assert decide(None, attempts=8, schedule=DEFAULT_SCHEDULE).delay_s is None  # given up
    assert decide(302, attempts=1, schedule=DEFAULT_SCHEDULE).delay_s is not None
    limited = decide(429, attempts=1, schedule=DEFAULT_SCHEDULE, retry_after_s=120)
    assert limited.delay_s == 120


def test_retry_after() -> None:
    assert parse_retry_after("30") == 30
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("999999999") == 86400
    later = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    value = parse_retry_after(later)
    assert value is not None and 100 < value <= 120


def test_payload_shapes() -> None:
    ev = Event("evt_1", "t", "transcript.failed", "rec_1", "tr_1", "failed", "no_speech", T, T)
    assert event_payload(ev, recording_metadata={"a": 1}, transcript_metadata={"b": 2}) == {
        "event": "transcript.failed",
        "data": {
            "data": {
                "code": "failed",
                "sub_code": "no_speech",
                "updated_at": "2026-01-01T00:00:00Z",
            },
            "transcript": {"id": "tr_1", "metadata": {"b": 2}},
            "recording": {"id": "rec_1", "metadata": {"a": 1}},
            "bot": None,
        },
    }
    rec = Event("evt_2", "t", "recording.done", "rec_1", None, "done", None, T, T)
    body = event_payload(rec, recording_metadata=None, transcript_metadata=None)
    assert "transcript" not in body["data"] and body["data"]["recording"]["metadata"] == {}


def test_secrets_and_the_rotation_overlap() -> None:
    s = new_secret()
    assert s.startswith("whsec_") and len(secret_key(s)) == 24
    for bad in ("abc", "whsec_!!", "whsec_" + "QUJD"):
        with pytest.raises(ValueError):
            secret_key(bad)
    ep = Endpoint("we_1", "t", "https://x", ("recording.done",), s, T, T)
    rotated = Endpoint(
        "we_1",
        "t",
        "https://x",
        ("recording.done",),
        new_secret(),
        T,
        T,
        previous_secret=s,
        previous_expires_at=T + timedelta(hours=1),
    )
    assert ep.signing_secrets(T) == (s,)
    assert rotated.signing_secrets(T) == (rotated.secret, s)
    assert rotated.signing_secrets(T + timedelta(hours=2)) == (rotated.secret,)
    assert ep.wants("recording.done") and not ep.wants("transcript.done")
