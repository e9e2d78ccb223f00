"""Chunk units on SQLite (see ``postcall.store.units``): a mixin of ``SqliteStore``.

Two tables: ``units`` (one row per unit, with its own lease) and ``unit_jobs`` (per
split job: units planned and done, and when it was last served, for fair
scheduling). Rows of jobs that ended or were deleted are swept by ``claim_work``;
every other operation checks that the job is still there.

"Last served" must be comparable with a queued job's arrival, which is its ``seq``:
an event is stamped (highest seq at the time, a counter), so a job queued after
the event has a larger seq, and one queued before it wins a tie.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from postcall.domain import Transcription, TranscriptionError, TranscriptionStatus
from postcall.errors import WorkerLost
from postcall.store.base import transcription_from_row
from postcall.store.units import (
    UNITS_PROGRESS,
    WORKER_LOST_MESSAGE,
    Unit,
    UnitClaim,
    UnitOutcome,
    UnitPlan,
    UnitStatus,
)

UNITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    transcription_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    PRIMARY KEY (transcription_id, idx)
);
CREATE INDEX IF NOT EXISTS units_by_status ON units (status, transcription_id, idx);
CREATE TABLE IF NOT EXISTS unit_jobs (
    transcription_id TEXT PRIMARY KEY,
    planned INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    served_seq INTEGER NOT NULL,
    served_n INTEGER NOT NULL
);
"""

_PROCESSING = TranscriptionStatus.PROCESSING.value
_LIVE = "('queued', 'processing')"  # job states whose units are kept


class SqliteUnitsMixin:
    """``UnitStore`` for ``SqliteStore`` (which provides the connection and clock)."""

    _clock: Callable[[], float]
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _conn: Callable[[], sqlite3.Connection]
    _emit_transcript: Callable[[sqlite3.Connection, str], None]
    _owned: Callable[[sqlite3.Connection, str, str], bool]
    claim: Callable[..., Transcription | None]

    def publish_units(
        self, transcription_id: str, worker_id: str, units: Sequence[UnitPlan]
    ) -> bool:
        with self._tx() as db:
            if not self._owned(db, transcription_id, worker_id):
                return False
            now = self._clock()
            exists = db.execute(
                "SELECT planned, done FROM unit_jobs WHERE transcription_id=?", (transcription_id,)
            ).fetchone()
            if exists is None:
                db.executemany(
                    "INSERT OR IGNORE INTO units (transcription_id, idx, spec, status)"
                    " VALUES (?,?,?,?)",
                    [(transcription_id, u.index, u.spec, UnitStatus.PENDING.value) for u in units],
                )
                seq, n = _stamp(db)
                db.execute(
                    "INSERT INTO unit_jobs VALUES (?,?,0,?,?)",
                    (transcription_id, len(units), seq, n),
                )
            elif exists["done"] >= exists["planned"]:
                return True  # every unit is done: the job stays with its worker
            # Parked: still processing, but without a lease nobody claims or takes it over.
            db.execute(
                "UPDATE transcriptions SET lease_owner=NULL, lease_expires=NULL, attempts=0,"
                " updated_at=? WHERE id=?",
                (now, transcription_id),
            )
            return True

    def claim_work(
        self, worker_id: str, *, lease_s: float, max_attempts: int
    ) -> Transcription | UnitClaim | None:
        for _ in range(3):  # a job seen here may be taken by another worker before ``claim``
            with self._tx() as db:
                now = self._clock()
                self._sweep_units(db, now, max_attempts)
                unit = db.execute(
                    "SELECT u.transcription_id, u.idx, j.served_seq, j.served_n,"
                    " (SELECT COUNT(*) FROM units r WHERE r.transcription_id=u.transcription_id"
                    "  AND r.status='running') AS in_flight"
                    " FROM units u JOIN unit_jobs j ON j.transcription_id=u.transcription_id"
                    " WHERE u.status='pending'"
                    " ORDER BY in_flight, j.served_seq, j.served_n, u.idx LIMIT 1"
                ).fetchone()
                job = db.execute(
                    "SELECT seq FROM transcriptions"
                    " WHERE status=? OR (status=? AND lease_expires<?) ORDER BY seq LIMIT 1",
                    (TranscriptionStatus.QUEUED.value, _PROCESSING, now),
                ).fetchone()
                if unit is None and job is None:
                    return None
                if unit is not None and (
                    job is None
                    or (unit["in_flight"], unit["served_seq"], unit["served_n"])
                    < (0, job["seq"], 0)
                ):
                    return self._take_unit(
                        db, unit["transcription_id"], unit["idx"], worker_id, now + lease_s
                    )
            claimed = self.claim(worker_id, lease_s=lease_s, max_attempts=max_attempts)
            if claimed is not None:
                return claimed
        return None

    def _take_unit(
        self,
        db: sqlite3.Connection,
        transcription_id: str,
        index: int,
        worker_id: str,
        expires: float,
    ) -> UnitClaim:
        db.execute(
            "UPDATE units SET status='running', lease_owner=?, lease_expires=?,"
            " attempts=attempts+1 WHERE transcription_id=? AND idx=?",
            (worker_id, expires, transcription_id, index),
        )
        self._served(db, transcription_id)
        row = db.execute(
            "SELECT * FROM units WHERE transcription_id=? AND idx=?", (transcription_id, index)
        ).fetchone()
        job = db.execute("SELECT * FROM transcriptions WHERE id=?", (transcription_id,)).fetchone()
        return UnitClaim(_unit(row), transcription_from_row(dict(job)))

    def _sweep_units(self, db: sqlite3.Connection, now: float, max_attempts: int) -> None:
        """Drop units of ended jobs; expired units back to pending, or worker_lost."""
        for table in ("units", "unit_jobs"):
            db.execute(
                f"DELETE FROM {table} WHERE transcription_id NOT IN"
                f" (SELECT id FROM transcriptions WHERE status IN {_LIVE})"
            )
        lost = db.execute(
            "SELECT transcription_id, MAX(attempts) AS attempts FROM units"
            " WHERE status='running' AND lease_expires<? AND attempts>=?"
            " GROUP BY transcription_id",
            (now, max_attempts),
        ).fetchall()
        for row in lost:
            message = WORKER_LOST_MESSAGE.format(attempts=row["attempts"])
            self._fail_split_job(
                db, row["transcription_id"], TranscriptionError(WorkerLost.code, message), now
            )
        db.execute(
            "UPDATE units SET status='pending', lease_owner=NULL, lease_expires=NULL"
            " WHERE status='running' AND lease_expires<?",
            (now,),
        )

    def _fail_split_job(
        self, db: sqlite3.Connection, transcription_id: str, error: TranscriptionError, now: float
    ) -> None:
        """End a split job as failed (a unit's error, or worker_lost) and drop its units;
        its ``transcript.failed`` event goes to the webhook outbox in the same transaction."""
        failed = db.execute(
            "UPDATE transcriptions SET status=?, updated_at=?, error_code=?, error_message=?,"
            " lease_owner=NULL, lease_expires=NULL WHERE id=? AND status=?",
            (
                TranscriptionStatus.FAILED.value,
                now,
                error.code,
                error.message,
                transcription_id,
                _PROCESSING,
            ),
        )
        if failed.rowcount:
            self._emit_transcript(db, transcription_id)
        db.execute("DELETE FROM units WHERE transcription_id=?", (transcription_id,))
        db.execute("DELETE FROM unit_jobs WHERE transcription_id=?", (transcription_id,))

    def _served(self, db: sqlite3.Connection, transcription_id: str) -> None:
        seq, n = _stamp(db)
        db.execute(
            "UPDATE unit_jobs SET served_seq=?, served_n=? WHERE transcription_id=?",
            (seq, n, transcription_id),
        )

    def _owned_unit(
        self, db: sqlite3.Connection, transcription_id: str, index: int, worker_id: str
    ) -> bool:
        row = db.execute(
            "SELECT 1 FROM units u JOIN transcriptions t ON t.id=u.transcription_id"
            " WHERE u.transcription_id=? AND u.idx=? AND u.status='running'"
            " AND u.lease_owner=? AND u.lease_expires>=? AND t.status=?",
            (transcription_id, index, worker_id, self._clock(), _PROCESSING),
        ).fetchone()
        return row is not None

    def heartbeat_unit(
        self, transcription_id: str, index: int, worker_id: str, *, lease_s: float
    ) -> bool:
        with self._tx() as db:
            if not self._owned_unit(db, transcription_id, index, worker_id):
                return False
            db.execute(
                "UPDATE units SET lease_expires=? WHERE transcription_id=? AND idx=?",
                (self._clock() + lease_s, transcription_id, index),
            )
            return True

    def complete_unit(
        self,
        transcription_id: str,
        index: int,
        worker_id: str,
        payload: str,
        *,
        lease_s: float,
    ) -> UnitOutcome:
        with self._tx() as db:
            if not self._owned_unit(db, transcription_id, index, worker_id):
                return UnitOutcome.LOST
            now = self._clock()
            db.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?,?,?)", (transcription_id, index, payload)
            )
            db.execute(
                "UPDATE units SET status='done', lease_owner=NULL, lease_expires=NULL"
                " WHERE transcription_id=? AND idx=?",
                (transcription_id, index),
            )
            db.execute(
                "UPDATE unit_jobs SET done=done+1 WHERE transcription_id=?", (transcription_id,)
            )
            self._served(db, transcription_id)
            counts = db.execute(
                "SELECT planned, done FROM unit_jobs WHERE transcription_id=?", (transcription_id,)
            ).fetchone()
            progress = UNITS_PROGRESS * counts["done"] / max(1, counts["planned"])
            db.execute(
                "UPDATE transcriptions SET progress=MAX(progress, ?), updated_at=? WHERE id=?",
                (progress, now, transcription_id),
            )
            if counts["done"] < counts["planned"]:
                return UnitOutcome.DONE
            db.execute(
                "UPDATE transcriptions SET lease_owner=?, lease_expires=?, attempts=1 WHERE id=?",
                (worker_id, now + lease_s, transcription_id),
            )
            return UnitOutcome.LAST

    def fail_unit(
        self, transcription_id: str, index: int, worker_id: str, error: TranscriptionError
    ) -> bool:
        with self._tx() as db:
            if not self._owned_unit(db, transcription_id, index, worker_id):
                return False
            self._fail_split_job(db, transcription_id, error, self._clock())
            return True

    def release_unit(self, transcription_id: str, index: int, worker_id: str) -> bool:
        with self._tx() as db:
            if not self._owned_unit(db, transcription_id, index, worker_id):
                return False
            db.execute(
                "UPDATE units SET status='pending', lease_owner=NULL, lease_expires=NULL,"
                " attempts=MAX(attempts-1, 0) WHERE transcription_id=? AND idx=?",
                (transcription_id, index),
            )
            return True

    def list_units(self, transcription_id: str) -> list[Unit]:
        rows = (
            self._conn()
            .execute(
                "SELECT u.* FROM units u JOIN transcriptions t ON t.id=u.transcription_id"
                f" WHERE u.transcription_id=? AND t.status IN {_LIVE} ORDER BY u.idx",
                (transcription_id,),
            )
            .fetchall()
        )
        return [_unit(r) for r in rows]


def _stamp(db: sqlite3.Connection) -> tuple[int, int]:
    """An event's place among job arrivals (highest seq so far) and among events."""
    seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM transcriptions").fetchone()[0]
    n = db.execute("SELECT COALESCE(MAX(served_n), 0) + 1 FROM unit_jobs").fetchone()[0]
    return int(seq), int(n)


def _unit(row: Any) -> Unit:
    return Unit(
        transcription_id=str(row["transcription_id"]),
        index=int(row["idx"]),
        spec=str(row["spec"]),
        status=UnitStatus(row["status"]),
        attempts=int(row["attempts"]),
        lease_owner=row["lease_owner"],
    )
