"""Voiceprints on SQLite (see ``postcall.store.voiceprints``): a mixin of ``SqliteStore``.

The table is created with the others (``CREATE TABLE IF NOT EXISTS``), so a database
made before voiceprints gains it on its next open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from postcall.domain import Voiceprint
from postcall.errors import NotFound
from postcall.store.voiceprints import voiceprint_fields, voiceprint_from_row

if TYPE_CHECKING:
    from postcall.store.base import Page

VOICEPRINTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS voiceprints (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    embedding TEXT NOT NULL,
    seconds REAL NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS voiceprints_by_participant
    ON voiceprints (tenant, participant_id, model);
CREATE INDEX IF NOT EXISTS voiceprints_by_time ON voiceprints (tenant, created_at, id);
"""

_COLUMNS = (
    "id",
    "tenant",
    "participant_id",
    "name",
    "model",
    "embedding",
    "seconds",
    "source",
    "created_at",
    "updated_at",
)


class SqliteVoiceprintsMixin:
    """``VoiceprintStore`` for ``SqliteStore`` (which provides the connection)."""

    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _conn: Callable[[], sqlite3.Connection]
    _page: Callable[..., Any]

    def put_voiceprint(self, voiceprint: Voiceprint) -> Voiceprint:
        fields = voiceprint_fields(voiceprint)
        with self._tx() as db:
            held = db.execute(
                "SELECT id, created_at FROM voiceprints WHERE tenant=? AND participant_id=?"
                " AND model=?",
                (voiceprint.tenant, voiceprint.participant_id, voiceprint.model),
            ).fetchone()
            if held is not None:
                fields["id"], fields["created_at"] = held["id"], held["created_at"]
                db.execute("DELETE FROM voiceprints WHERE id=?", (held["id"],))
            db.execute(
                f"INSERT INTO voiceprints ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in _COLUMNS)})",
                tuple(fields[c] for c in _COLUMNS),
            )
        return voiceprint_from_row(fields)

    def get_voiceprint(self, tenant: str, voiceprint_id: str) -> Voiceprint:
        row = (
            self._conn()
            .execute("SELECT * FROM voiceprints WHERE tenant=? AND id=?", (tenant, voiceprint_id))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"voiceprint {voiceprint_id!r} not found")
        return voiceprint_from_row(dict(row))

    def find_voiceprint(self, tenant: str, participant_id: str, model: str) -> Voiceprint | None:
        row = (
            self._conn()
            .execute(
                "SELECT * FROM voiceprints WHERE tenant=? AND participant_id=? AND model=?",
                (tenant, participant_id, model),
            )
            .fetchone()
        )
        return None if row is None else voiceprint_from_row(dict(row))

    def list_voiceprints(
        self, tenant: str, *, limit: int, cursor: str | None, participant_id: str | None = None
    ) -> Page[Voiceprint]:
        sql = "SELECT * FROM voiceprints WHERE tenant=?"
        args: list[object] = [tenant]
        if participant_id is not None:
            sql += " AND participant_id=?"
            args.append(participant_id)
        page: Page[Voiceprint] = self._page(sql, args, cursor, limit, voiceprint_from_row)
        return page

    def voiceprints_of_model(self, tenant: str, model: str) -> list[Voiceprint]:
        rows = self._conn().execute(
            "SELECT * FROM voiceprints WHERE tenant=? AND model=? ORDER BY created_at, id",
            (tenant, model),
        )
        return [voiceprint_from_row(dict(r)) for r in rows]

    def delete_voiceprint(self, tenant: str, voiceprint_id: str) -> Voiceprint:
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM voiceprints WHERE tenant=? AND id=?", (tenant, voiceprint_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"voiceprint {voiceprint_id!r} not found")
            db.execute("DELETE FROM voiceprints WHERE id=?", (voiceprint_id,))
        return voiceprint_from_row(dict(row))

    def delete_participant_voiceprints(self, tenant: str, participant_id: str) -> int:
        with self._tx() as db:
            return int(
                db.execute(
                    "DELETE FROM voiceprints WHERE tenant=? AND participant_id=?",
                    (tenant, participant_id),
                ).rowcount
            )
