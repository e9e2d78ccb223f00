"""SQLite side of ``IdempotencyStore``: a mixin of ``SqliteStore``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from postcall.store.idempotency import IdempotencyEntry, StoredResponse

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    content_type TEXT,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class SqliteIdempotency:
    """Idempotency keys (one row per tenant and key) and server secrets."""

    _clock: Callable[[], float]
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _conn: Callable[[], sqlite3.Connection]

    def idempotency_reserve(
        self, tenant: str, key: str, fingerprint: str, *, lock_s: float
    ) -> IdempotencyEntry | None:
        now = self._clock()
        with self._tx() as db:
            db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            row = db.execute(
                "SELECT * FROM idempotency WHERE tenant=? AND key=?", (tenant, key)
            ).fetchone()
            if row is not None:
                return _entry(row)
            db.execute(
                "INSERT INTO idempotency (tenant, key, fingerprint, expires_at) VALUES (?,?,?,?)",
                (tenant, key, fingerprint, now + lock_s),
            )
            return None

    def idempotency_complete(
        self, tenant: str, key: str, fingerprint: str, response: StoredResponse, *, ttl_s: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE idempotency SET status=?, body=?, content_type=?, expires_at=?"
                " WHERE tenant=? AND key=? AND fingerprint=? AND status IS NULL",
                (
                    response.status,
                    response.body,
                    response.content_type,
                    self._clock() + ttl_s,
                    tenant,
                    key,
                    fingerprint,
                ),
            )

    def idempotency_release(self, tenant: str, key: str, fingerprint: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM idempotency WHERE tenant=? AND key=? AND fingerprint=?"
                " AND status IS NULL",
                (tenant, key, fingerprint),
            )

    def server_secret(self, name: str, candidate: str) -> str:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO secrets VALUES (?,?)", (name, candidate))
            row = db.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
        return str(row[0])


def _entry(row: sqlite3.Row) -> IdempotencyEntry:
    response = None
    if row["status"] is not None:
        response = StoredResponse(int(row["status"]), str(row["body"]), str(row["content_type"]))
    return IdempotencyEntry(str(row["fingerprint"]), response)
