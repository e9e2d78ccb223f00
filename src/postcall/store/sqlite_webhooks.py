"""SQLite webhooks: endpoints, the event outbox and deliveries (mixed into ``SqliteStore``).

Events are inserted by ``_emit`` / ``_emit_transcript`` inside the transaction of the
change that causes them. Every write here runs in a ``BEGIN IMMEDIATE`` transaction,
so dispatchers in several threads or processes never claim one delivery twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from postcall.domain import Recording
from postcall.errors import NotFound
from postcall.sealing import SecretBox
from postcall.store.base import Page, ts_to_dt
from postcall.store.webhooks_base import (
    GIVEN_UP,
    attempt_to_json,
    decode_seq_cursor,
    delivery_from_row,
    endpoint_fields,
    endpoint_from_row,
    event_from_row,
    new_delivery_id,
    new_event_id,
)
from postcall.webhooks import (
    RECORDING_DONE,
    TRANSCRIPT_DONE,
    TRANSCRIPT_FAILED,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
)

WEBHOOK_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    enabled TEXT NOT NULL,
    disabled_reason TEXT NOT NULL,
    description TEXT NOT NULL,
    previous_secret TEXT NOT NULL,
    previous_expires TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_tenant
    ON webhook_endpoints (tenant, created_at);
CREATE TABLE IF NOT EXISTS webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    recording_id TEXT NOT NULL,
    transcription_id TEXT,
    code TEXT NOT NULL,
    sub_code TEXT,
    updated_at REAL NOT NULL,
    created_at REAL NOT NULL,
    pending INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS webhook_events_pending ON webhook_events (pending, seq);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_owner TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint
    ON webhook_deliveries (tenant, endpoint_id, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_event
    ON webhook_deliveries (tenant, event_id, seq);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
"""

_ENDPOINT_COLUMNS = (
    "id, tenant, url, events, secret, created_at, updated_at, enabled, disabled_reason,"
    " description, previous_secret, previous_expires"
)


class SqliteWebhooks:
    """The ``WebhookStore`` port for ``SqliteStore`` (which provides the connection)."""

    _clock: Callable[[], float]
    _conn: Callable[[], sqlite3.Connection]
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # --- the outbox, written inside the caller's transaction ---------------------------
    _box: SecretBox | None = None

    def seal_secrets_with(self, box: SecretBox | None) -> None:
        self._box = box

    def _emit(
        self,
        db: sqlite3.Connection,
        *,
        tenant: str,
        type: str,
        recording_id: str,
        transcription_id: str | None,
        code: str,
        sub_code: str | None,
        at: float,
    ) -> None:
        db.execute(
            "INSERT INTO webhook_events (id, tenant, type, recording_id, transcription_id,"
            " code, sub_code, updated_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (new_event_id(), tenant, type, recording_id, transcription_id, code, sub_code, at, at),
        )

    def _emit_recording(self, db: sqlite3.Connection, recording: Recording) -> None:
        """``recording.done`` for a recording just stored (its media is stored and probed)."""
        self._emit(
            db,
            tenant=recording.tenant,
            type=RECORDING_DONE,
            recording_id=recording.id,
            transcription_id=None,
            code="done",
            sub_code=None,
            at=recording.created_at.timestamp(),
        )

    def _emit_transcript(self, db: sqlite3.Connection, transcription_id: str) -> None:
        """``transcript.done`` or ``transcript.failed`` for a transcription that just ended."""
        row = db.execute(
            "SELECT tenant, recording_id, status, error_code, updated_at FROM transcriptions"
            " WHERE id=?",
            (transcription_id,),
        ).fetchone()
        done = row["status"] == "completed"
        self._emit(
            db,
            tenant=row["tenant"],
            type=TRANSCRIPT_DONE if done else TRANSCRIPT_FAILED,
            recording_id=row["recording_id"],
            transcription_id=transcription_id,
            code="done" if done else "failed",
            sub_code=None if done else row["error_code"],
            at=float(row["updated_at"]),
        )

    def pending_events(self, limit: int) -> list[Event]:
        rows = (
            self._conn()
            .execute("SELECT * FROM webhook_events WHERE pending=1 ORDER BY seq LIMIT ?", (limit,))
            .fetchall()
        )
        return [event_from_row(dict(r)) for r in rows]

    def fan_out(self, event_id: str, payload: str, endpoint_ids: Sequence[str]) -> bool:
        with self._tx() as db:
            row = db.execute(
                "SELECT tenant, type FROM webhook_events WHERE id=? AND pending=1", (event_id,)
            ).fetchone()
            if row is None:
                return False
            now = self._clock()
            db.execute("UPDATE webhook_events SET pending=0 WHERE id=?", (event_id,))
            db.executemany(
                "INSERT INTO webhook_deliveries (id, tenant, event_id, endpoint_id, event_type,"
                " payload, status, attempts, next_attempt_at, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,0,?,?,?)",
                [
                    (
                        new_delivery_id(),
                        row["tenant"],
                        event_id,
                        ep,
                        row["type"],
                        payload,
                        DeliveryStatus.PENDING.value,
                        now,
                        now,
                        now,
                    )
                    for ep in endpoint_ids
                ],
            )
            return True

    # --- endpoints --------------------------------------------------------------------
    def add_endpoint(self, endpoint: Endpoint) -> None:
        fields = endpoint_fields(endpoint, self._box)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) VALUES"
                f" ({','.join('?' * len(fields))})",
                tuple(fields.values()),
            )

    def get_endpoint(self, tenant: str, endpoint_id: str) -> Endpoint:
        row = (
            self._conn()
            .execute(
                "SELECT * FROM webhook_endpoints WHERE tenant=? AND id=?", (tenant, endpoint_id)
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
        return endpoint_from_row(dict(row), self._box)

    def list_endpoints(self, tenant: str) -> list[Endpoint]:
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM webhook_endpoints WHERE tenant=? ORDER BY created_at, id", (tenant,)
            )
            .fetchall()
        )
        return [endpoint_from_row(dict(r), self._box) for r in rows]

    def save_endpoint(self, endpoint: Endpoint) -> None:
        fields = endpoint_fields(endpoint, self._box)
        sets = ", ".join(f"{k}=?" for k in fields if k not in ("id", "tenant"))
        values = [v for k, v in fields.items() if k not in ("id", "tenant")]
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE webhook_endpoints SET {sets} WHERE tenant=? AND id=?",
                (*values, endpoint.tenant, endpoint.id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"webhook endpoint {endpoint.id!r} not found")

    def delete_endpoint(self, tenant: str, endpoint_id: str) -> None:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM webhook_endpoints WHERE tenant=? AND id=?", (tenant, endpoint_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"webhook endpoint {endpoint_id!r} not found")

    # --- deliveries -------------------------------------------------------------------
    def claim_delivery(self, owner: str, *, lease_s: float, max_attempts: int) -> Delivery | None:
        with self._tx() as db:
            while True:
                now = self._clock()
                row = db.execute(
                    "SELECT * FROM webhook_deliveries WHERE status=? AND next_attempt_at<=?"
                    " ORDER BY next_attempt_at, seq LIMIT 1",
                    (DeliveryStatus.PENDING.value, now),
                ).fetchone()
                if row is None:
                    return None
                if row["attempts"] >= max_attempts:
                    given_up = Attempt(0, ts_to_dt(now), False, None, 0.0, GIVEN_UP)
                    self._log_attempt(db, row["id"], given_up)
                    db.execute(
                        "UPDATE webhook_deliveries SET status=?, next_attempt_at=NULL,"
                        " lease_owner=NULL, updated_at=? WHERE id=?",
                        (DeliveryStatus.FAILED.value, now, row["id"]),
                    )
                    continue
                db.execute(
                    "UPDATE webhook_deliveries SET attempts=attempts+1, lease_owner=?,"
                    " next_attempt_at=?, updated_at=? WHERE id=?",
                    (owner, now + lease_s, now, row["id"]),
                )
                return self._delivery(db, row["id"])

    def _log_attempt(self, db: sqlite3.Connection, delivery_id: str, attempt: Attempt) -> None:
        number = db.execute(
            "SELECT COUNT(*) FROM webhook_attempts WHERE delivery_id=?", (delivery_id,)
        ).fetchone()[0]
        numbered = Attempt(
            number + 1,
            attempt.at,
            attempt.succeeded,
            attempt.response_code,
            attempt.latency_ms,
            attempt.error,
        )
        db.execute(
            "INSERT INTO webhook_attempts VALUES (?,?,?)",
            (delivery_id, number + 1, attempt_to_json(numbered)),
        )

    def finish_attempt(
        self, delivery_id: str, owner: str, attempt: Attempt, *, retry_at: datetime | None
    ) -> bool:
        with self._tx() as db:
            row = db.execute(
                "SELECT 1 FROM webhook_deliveries WHERE id=? AND status=? AND lease_owner=?",
                (delivery_id, DeliveryStatus.PENDING.value, owner),
            ).fetchone()
            if row is None:
                return False
            self._log_attempt(db, delivery_id, attempt)
            if attempt.succeeded:
                status = DeliveryStatus.SUCCEEDED
            else:
                status = DeliveryStatus.PENDING if retry_at else DeliveryStatus.FAILED
            db.execute(
                "UPDATE webhook_deliveries SET status=?, next_attempt_at=?, lease_owner=NULL,"
                " updated_at=? WHERE id=?",
                (
                    status.value,
                    retry_at.timestamp() if status is DeliveryStatus.PENDING and retry_at else None,
                    self._clock(),
                    delivery_id,
                ),
            )
            return True

    def postpone_delivery(self, delivery_id: str, owner: str, *, until: datetime) -> bool:
        with self._tx() as db:
            changed = db.execute(
                "UPDATE webhook_deliveries SET attempts=MAX(attempts-1, 0), lease_owner=NULL,"
                " next_attempt_at=?, updated_at=? WHERE id=? AND status=? AND lease_owner=?",
                (
                    until.timestamp(),
                    self._clock(),
                    delivery_id,
                    DeliveryStatus.PENDING.value,
                    owner,
                ),
            ).rowcount
            return bool(changed)

    def _delivery(self, db: sqlite3.Connection, delivery_id: str) -> Delivery:
        row = db.execute("SELECT * FROM webhook_deliveries WHERE id=?", (delivery_id,)).fetchone()
        log = db.execute(
            "SELECT record FROM webhook_attempts WHERE delivery_id=? ORDER BY number",
            (delivery_id,),
        ).fetchall()
        return delivery_from_row(dict(row), [r[0] for r in log])

    def get_delivery(self, tenant: str, delivery_id: str) -> Delivery:
        db = self._conn()
        row = db.execute(
            "SELECT 1 FROM webhook_deliveries WHERE tenant=? AND id=?", (tenant, delivery_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"webhook delivery {delivery_id!r} not found")
        return self._delivery(db, delivery_id)

    def list_deliveries(
        self,
        tenant: str,
        *,
        endpoint_id: str | None = None,
        event_id: str | None = None,
        limit: int,
        cursor: str | None,
    ) -> Page[Delivery]:
        sql = "SELECT id, seq FROM webhook_deliveries WHERE tenant=?"
        args: list[Any] = [tenant]
        if endpoint_id is not None:
            sql += " AND endpoint_id=?"
            args.append(endpoint_id)
        if event_id is not None:
            sql += " AND event_id=?"
            args.append(event_id)
        after = decode_seq_cursor(cursor)
        if after is not None:
            sql += " AND seq<?"
            args.append(after)
        db = self._conn()
        rows = db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit + 1)).fetchall()
        items = [self._delivery(db, r["id"]) for r in rows[:limit]]
        nxt = str(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page(items, nxt)

    def resend(self, tenant: str, delivery_id: str) -> Delivery:
        with self._tx() as db:
            now = self._clock()
            cur = db.execute(
                "UPDATE webhook_deliveries SET status=?, attempts=0, next_attempt_at=?,"
                " lease_owner=NULL, updated_at=? WHERE tenant=? AND id=?",
                (DeliveryStatus.PENDING.value, now, now, tenant, delivery_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"webhook delivery {delivery_id!r} not found")
            return self._delivery(db, delivery_id)
