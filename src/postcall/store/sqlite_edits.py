"""Edits and queue facts on SQLite (see ``postcall.store.edits``): a mixin of
``SqliteStore``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from postcall.domain import Recording, Transcription, TranscriptionStatus
from postcall.errors import NotFound
from postcall.store.base import recording_from_row, transcription_from_row
from postcall.store.edits import KEPT_RUNS, Run, not_failed

RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_runs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    audio_s REAL NOT NULL,
    elapsed_s REAL NOT NULL,
    at REAL NOT NULL
);
"""

_QUEUED = TranscriptionStatus.QUEUED.value


class SqliteEditsMixin:
    """``EditStore`` for ``SqliteStore`` (which provides the connection and clock)."""

    _clock: Callable[[], float]
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _conn: Callable[[], sqlite3.Connection]

    def update_recording_metadata(
        self, tenant: str, recording_id: str, metadata: Mapping[str, Any]
    ) -> Recording:
        with self._tx() as db:
            changed = db.execute(
                "UPDATE recordings SET metadata=? WHERE tenant=? AND id=?",
                (json.dumps(dict(metadata), ensure_ascii=False), tenant, recording_id),
            ).rowcount
            if not changed:
                raise NotFound(f"recording {recording_id!r} not found")
            row = db.execute(
                "SELECT * FROM recordings WHERE tenant=? AND id=?", (tenant, recording_id)
            ).fetchone()
        return recording_from_row(dict(row))

    def retry_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        with self._tx() as db:
            row = db.execute(
                "SELECT status FROM transcriptions WHERE tenant=? AND id=?",
                (tenant, transcription_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"transcription {transcription_id!r} not found")
            if row["status"] != TranscriptionStatus.FAILED.value:
                raise not_failed(transcription_id, str(row["status"]))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM transcriptions").fetchone()[0]
            db.execute(
                "UPDATE transcriptions SET status=?, updated_at=?, progress=0, attempts=0,"
                " lease_owner=NULL, lease_expires=NULL, result=NULL, error_code=NULL,"
                " error_message=NULL, seq=? WHERE id=?",
                (_QUEUED, self._clock(), seq, transcription_id),
            )
            db.execute("DELETE FROM units WHERE transcription_id=?", (transcription_id,))
            db.execute("DELETE FROM unit_jobs WHERE transcription_id=?", (transcription_id,))
            fresh = db.execute("SELECT * FROM transcriptions WHERE id=?", (transcription_id,))
            return transcription_from_row(dict(fresh.fetchone()))

    def queue_position(self, transcription_id: str) -> int | None:
        db = self._conn()
        row = db.execute(
            "SELECT status, seq FROM transcriptions WHERE id=?", (transcription_id,)
        ).fetchone()
        if row is None or row["status"] != _QUEUED:
            return None
        ahead = db.execute(
            "SELECT COUNT(*) FROM transcriptions WHERE status=? AND seq<?", (_QUEUED, row["seq"])
        ).fetchone()[0]
        return int(ahead) + 1

    def processing_count(self) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM transcriptions WHERE status=? AND lease_expires>=?",
                (TranscriptionStatus.PROCESSING.value, self._clock()),
            )
            .fetchone()
        )
        return int(row[0])

    def record_run(self, audio_s: float, elapsed_s: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO job_runs (audio_s, elapsed_s, at) VALUES (?,?,?)",
                (audio_s, elapsed_s, self._clock()),
            )
            db.execute(
                "DELETE FROM job_runs WHERE n <= (SELECT MAX(n) FROM job_runs) - ?", (KEPT_RUNS,)
            )

    def recent_runs(self, limit: int) -> list[Run]:
        rows = self._conn().execute(
            "SELECT audio_s, elapsed_s FROM job_runs ORDER BY n DESC LIMIT ?", (limit,)
        )
        return [Run(float(r["audio_s"]), float(r["elapsed_s"])) for r in rows]
