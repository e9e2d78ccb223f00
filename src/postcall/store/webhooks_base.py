"""The webhook part of the store port: endpoints, the event outbox, deliveries.

Events are written by the store itself, in the same transaction (or Lua script) as the
change that causes them: ``add_recording`` writes ``recording.done``; ``complete``,
``fail`` and a ``claim`` that gives a job up as ``worker_lost`` write
``transcript.done`` / ``transcript.failed``. A dispatcher then fans each pending event
out (``fan_out``) and claims the resulting deliveries under a lease
(``claim_delivery``), so any number of dispatchers can share one store and one that
dies mid-delivery loses nothing: its delivery is due again when the lease runs out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from postcall.domain import new_id
from postcall.sealing import seal, unseal
from postcall.webhooks import Attempt, Delivery, DeliveryStatus, Endpoint, Event

if TYPE_CHECKING:
    from postcall.sealing import SecretBox
    from postcall.store.base import Page


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class WebhookStore(Protocol):
    """Webhook endpoints, the outbox of events and their deliveries."""

    def seal_secrets_with(self, box: SecretBox | None) -> None:
        """From now on keep endpoints' signing secrets sealed with ``box`` (None: in the
        clear); secrets stored in the clear before are still read."""

    # --- endpoints ----------------------------------------------------------------
    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Insert an endpoint."""

    def get_endpoint(self, tenant: str, endpoint_id: str) -> Endpoint:
        """The endpoint, or ``NotFound`` (also for another tenant's)."""
        ...

    def list_endpoints(self, tenant: str) -> list[Endpoint]:
        """The tenant's endpoints, oldest first."""
        ...

    def save_endpoint(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint's fields; ``NotFound`` when it is gone."""

    def delete_endpoint(self, tenant: str, endpoint_id: str) -> None:
        """Delete an endpoint; ``NotFound`` when there is none. Its deliveries stay
        readable through the event; pending ones fail when next claimed."""

    # --- the outbox -------------------------------------------------------------------
    def pending_events(self, limit: int) -> list[Event]:
        """Events not fanned out yet, oldest first."""
        ...

    def fan_out(self, event_id: str, payload: str, endpoint_ids: Sequence[str]) -> bool:
        """Turn a pending event into one pending delivery per endpoint, due now, with
        ``payload`` as body; False (and no change) when it was already fanned out."""
        ...

    # --- deliveries ---------------------------------------------------------------------
    def claim_delivery(self, owner: str, *, lease_s: float, max_attempts: int) -> Delivery | None:
        """Take the most overdue pending delivery under a lease (it is due again when the
        lease ends) and count the attempt; None when nothing is due. One already tried
        ``max_attempts`` times whose lease ran out fails instead."""
        ...

    def finish_attempt(
        self, delivery_id: str, owner: str, attempt: Attempt, *, retry_at: datetime | None
    ) -> bool:
        """Log ``attempt`` and end the lease: succeeded, pending again at ``retry_at``, or
        failed for good when ``retry_at`` is None. False unless ``owner`` holds it."""
        ...

    def postpone_delivery(self, delivery_id: str, owner: str, *, until: datetime) -> bool:
        """Give back a claimed delivery unsent: pending again at ``until``, its claim not
        counted as an attempt and nothing logged. False unless ``owner`` holds it."""
        ...

    def get_delivery(self, tenant: str, delivery_id: str) -> Delivery:
        """The delivery with its attempt log, or ``NotFound``."""
        ...

    def list_deliveries(
        self,
        tenant: str,
        *,
        endpoint_id: str | None = None,
        event_id: str | None = None,
        limit: int,
        cursor: str | None,
    ) -> Page[Delivery]:
        """Newest first: one endpoint's deliveries, or one event's."""
        ...

    def resend(self, tenant: str, delivery_id: str) -> Delivery:
        """Queue a delivery again now, with a fresh series of attempts; ``NotFound``."""
        ...


# --- codecs shared by the backends -----------------------------------------------


def new_event_id() -> str:
    return new_id("evt")


def new_delivery_id() -> str:
    return new_id("msg")


def _secret_context(tenant: str, endpoint_id: str) -> str:
    return f"webhook-endpoint:{tenant}:{endpoint_id}"


def endpoint_from_row(row: Mapping[str, Any], box: SecretBox | None = None) -> Endpoint:
    prev_exp = row.get("previous_expires")
    context = _secret_context(str(row["tenant"]), str(row["id"]))
    previous = str(row["previous_secret"]) if row.get("previous_secret") else None
    return Endpoint(
        id=str(row["id"]),
        tenant=str(row["tenant"]),
        url=str(row["url"]),
        events=tuple(json.loads(str(row["events"]))),
        secret=unseal(box, str(row["secret"]), context),
        created_at=ts_to_dt(float(row["created_at"])),
        updated_at=ts_to_dt(float(row["updated_at"])),
        enabled=str(row["enabled"]) in ("1", "True", "true"),
        disabled_reason=str(row["disabled_reason"]) if row.get("disabled_reason") else None,
        description=str(row.get("description") or ""),
        previous_secret=unseal(box, previous, context) if previous else None,
        previous_expires_at=ts_to_dt(float(prev_exp)) if prev_exp not in (None, "") else None,
    )


def endpoint_fields(e: Endpoint, box: SecretBox | None = None) -> dict[str, str]:
    """An endpoint as flat string fields (a Redis hash; SQLite binds the same values),
    its secrets sealed with ``box`` when there is one."""
    context = _secret_context(e.tenant, e.id)
    return {
        "id": e.id,
        "tenant": e.tenant,
        "url": e.url,
        "events": json.dumps(list(e.events)),
        "secret": seal(box, e.secret, context),
        "created_at": repr(e.created_at.timestamp()),
        "updated_at": repr(e.updated_at.timestamp()),
        "enabled": "1" if e.enabled else "0",
        "disabled_reason": e.disabled_reason or "",
        "description": e.description,
        "previous_secret": seal(box, e.previous_secret or "", context),
        "previous_expires": (
            repr(e.previous_expires_at.timestamp()) if e.previous_expires_at else ""
        ),
    }


def event_from_row(row: Mapping[str, Any]) -> Event:
    return Event(
        id=str(row["id"]),
        tenant=str(row["tenant"]),
        type=str(row["type"]),
        recording_id=str(row["recording_id"]),
        transcription_id=str(row["transcription_id"]) if row.get("transcription_id") else None,
        code=str(row["code"]),
        sub_code=str(row["sub_code"]) if row.get("sub_code") else None,
        updated_at=ts_to_dt(float(row["updated_at"])),
        created_at=ts_to_dt(float(row["created_at"])),
    )


def attempt_to_json(a: Attempt) -> str:
    return json.dumps(
        {
            "number": a.number,
            "at": a.at.timestamp(),
            "succeeded": a.succeeded,
            "response_code": a.response_code,
            "latency_ms": a.latency_ms,
            "error": a.error,
        }
    )


def attempt_from_json(raw: str) -> Attempt:
    d = json.loads(raw)
    return Attempt(
        number=int(d["number"]),
        at=ts_to_dt(float(d["at"])),
        succeeded=bool(d["succeeded"]),
        response_code=d["response_code"],
        latency_ms=float(d["latency_ms"]),
        error=d["error"],
    )


def delivery_from_row(row: Mapping[str, Any], log: Sequence[str] = ()) -> Delivery:
    nxt = row.get("next_attempt_at")
    return Delivery(
        id=str(row["id"]),
        tenant=str(row["tenant"]),
        event_id=str(row["event_id"]),
        endpoint_id=str(row["endpoint_id"]),
        event_type=str(row["event_type"]),
        payload=str(row["payload"]),
        status=DeliveryStatus(str(row["status"])),
        attempts=int(row["attempts"]),
        next_attempt_at=ts_to_dt(float(nxt)) if nxt not in (None, "") else None,
        created_at=ts_to_dt(float(row["created_at"])),
        updated_at=ts_to_dt(float(row["updated_at"])),
        log=tuple(attempt_from_json(r) for r in log),
    )


def decode_seq_cursor(cursor: str | None) -> int | None:
    from postcall.errors import InvalidInput

    if cursor is None:
        return None
    if not cursor.isdigit():
        raise InvalidInput("cursor is not one this server returned", field="cursor")
    return int(cursor)


GIVEN_UP = "the delivery's dispatcher stopped during each of its attempts; it is not retried"
