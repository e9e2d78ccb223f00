"""Webhooks: endpoints, events, deliveries, Standard Webhooks signing and the retry rule.

Plain dataclasses and pure functions; no HTTP framework, no store. The flow:

1. A state change writes an *event* into the store's outbox in the same transaction
   (``recording.done`` with the recording, ``transcript.done`` / ``transcript.failed``
   with the transcription's end).
2. A dispatcher fans a pending event out into one *delivery* per subscribed endpoint,
   with the payload built once (``event_payload``), so every attempt sends the same
   body under the same ``webhook-id`` (the event id).
3. The dispatcher claims due deliveries under a lease, sends them signed
   (``sign_headers``), logs every attempt and schedules the next one (``decide``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

RECORDING_DONE = "recording.done"
TRANSCRIPT_DONE = "transcript.done"
TRANSCRIPT_FAILED = "transcript.failed"
EVENT_TYPES: tuple[str, ...] = (RECORDING_DONE, TRANSCRIPT_DONE, TRANSCRIPT_FAILED)

DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
"""Seconds before each attempt: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h."""

SECRET_PREFIX = "whsec_"


# --- records -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A tenant's receiver URL, the events it wants and the secrets it is signed with.

    During a rotation ``previous_secret`` is still used (both signatures are sent) until
    ``previous_expires_at``.
    """

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: datetime
    updated_at: datetime
    enabled: bool = True
    disabled_reason: str | None = None
    description: str = ""
    previous_secret: str | None = None
    previous_expires_at: datetime | None = None

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets to sign with at ``now``: the current one, plus the previous one
        while the rotation overlap lasts."""
        if (
            self.previous_secret
            and self.previous_expires_at is not None
            and now < self.previous_expires_at
        ):
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def wants(self, event_type: str) -> bool:
        return self.enabled and event_type in self.events


@dataclass(frozen=True)
class Event:
    """An outbox entry: what happened, to what, and the status it reported then."""

    id: str
    tenant: str
    type: str
    recording_id: str
    transcription_id: str | None
    code: str
    sub_code: str | None
    updated_at: datetime
    created_at: datetime


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Attempt:
    """One try of a delivery, as the log keeps it. ``number`` counts from 1 per delivery."""

    number: int
    at: datetime
    succeeded: bool
    response_code: int | None
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint. ``attempts`` counts the tries of the current series
    (a resend starts a new one); ``log`` has every attempt ever made."""

    id: str
    tenant: str
    event_id: str
    endpoint_id: str
    event_type: str
    payload: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    log: tuple[Attempt, ...] = field(default=())


# --- payloads ------------------------------------------------------------------------


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def event_payload(
    event: Event,
    *,
    recording_metadata: Mapping[str, Any] | None,
    transcript_metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The body of an event, in the shape of Recall's documentation."""
    data: dict[str, Any] = {
        "data": {
            "code": event.code,
            "sub_code": event.sub_code,
            "updated_at": _iso(event.updated_at),
        },
    }
    if event.transcription_id is not None:
        data["transcript"] = {
            "id": event.transcription_id,
            "metadata": dict(transcript_metadata or {}),
        }
    data["recording"] = {"id": event.recording_id, "metadata": dict(recording_metadata or {})}
    data["bot"] = None
    return {"event": event.type, "data": data}


def encode_payload(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


# --- signing (Standard Webhooks) -------------------------------------------------------


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes, base64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ``ValueError`` when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes (base64 after 'whsec_')")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret, space-separated."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
    }


# --- the retry rule ---------------------------------------------------------------------


def parse_schedule(raw: str) -> tuple[float, ...]:
    """``"0,5,300"`` → seconds before each attempt; ``ValueError`` when malformed."""
    try:
        values = tuple(float(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"schedule {raw!r}: comma-separated seconds expected") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"schedule {raw!r}: at least one delay, none negative")
    return values


def parse_retry_after(value: str | None, *, cap_s: float = 86400.0) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return min(max(float(value), 0.0), cap_s)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from postcall.domain import utcnow

    return min(max((when - utcnow()).total_seconds(), 0.0), cap_s)


@dataclass(frozen=True)
class Decision:
    """What follows an attempt: done (succeeded or given up), or retried after ``delay_s``."""

    succeeded: bool
    delay_s: float | None
    disable_endpoint: bool = False


def decide(
    status_code: int | None,
    *,
    attempts: int,
    schedule: Sequence[float],
    retry_after_s: float | None = None,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> Decision:
    """The rule after attempt number ``attempts`` of a series answered ``status_code``.

    2xx succeeds. 410 Gone gives up and disables the endpoint. Anything else (no answer,
    a redirect, 4xx, 5xx) is retried on the schedule with ±``jitter`` while attempts
    remain; a 429's ``Retry-After`` replaces the scheduled delay.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Decision(True, None)
    if status_code == 410:
        return Decision(False, None, disable_endpoint=True)
    if attempts >= len(schedule):
        return Decision(False, None)
    if status_code == 429 and retry_after_s is not None:
        return Decision(False, retry_after_s)
    spread = 1 + (rng or random).uniform(-jitter, jitter)
    return Decision(False, schedule[attempts] * spread)
