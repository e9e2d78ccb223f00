"""SQLite store: the embedded default (stdlib ``sqlite3``, WAL, ``BEGIN IMMEDIATE``).

One connection per thread; every write runs in an immediate transaction so that
claims from several threads (or processes sharing the file) never hand one job to
two workers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from postcall.domain import (
    ApiKey,
    Recording,
    Transcription,
    TranscriptionError,
    TranscriptionResult,
    TranscriptionStatus,
)
from postcall.errors import Conflict, LimitReached, NotFound
from postcall.store import sqlite_idempotency as idempotency
from postcall.store.base import (
    Page,
    api_key_from_row,
    decode_cursor,
    encode_cursor,
    limit_message,
    media_to_json,
    options_to_json,
    recording_from_row,
    result_to_json,
    transcription_from_row,
)
from postcall.store.sqlite_edits import RUNS_SCHEMA, SqliteEditsMixin
from postcall.store.sqlite_units import UNITS_SCHEMA, SqliteUnitsMixin
from postcall.store.sqlite_voiceprints import VOICEPRINTS_SCHEMA, SqliteVoiceprintsMixin
from postcall.store.sqlite_webhooks import WEBHOOK_SCHEMA, SqliteWebhooks
from postcall.store.unavailable import raising_unavailable

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at REAL NOT NULL,
    media_key TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    media TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS recordings_by_time ON recordings (tenant, created_at, id);
CREATE INDEX IF NOT EXISTS recordings_by_age ON recordings (created_at);
CREATE TABLE IF NOT EXISTS transcriptions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    recording_id TEXT NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    seq INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS transcriptions_by_recording
    ON transcriptions (tenant, recording_id, created_at);
CREATE INDEX IF NOT EXISTS transcriptions_by_time ON transcriptions (tenant, created_at, id);
CREATE INDEX IF NOT EXISTS transcriptions_queue ON transcriptions (status, seq);
CREATE INDEX IF NOT EXISTS transcriptions_seq ON transcriptions (seq);
CREATE TABLE IF NOT EXISTS chunks (
    transcription_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (transcription_id, idx)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL
);
"""


#: How long a writer waits for another process's write lock before giving up (s).
BUSY_TIMEOUT_S = 30.0

#: What SQLite says when it cannot serve a request now (another process holds the write
#: lock past the busy timeout, the disk is full or failing, the file cannot be opened
#: or written): an outage, not a wrong request.
OUTAGE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "attempt to write a readonly database",
)


def _outage(exc: BaseException) -> bool:
    return any(m in str(exc).lower() for m in OUTAGE_MESSAGES)


@raising_unavailable((sqlite3.OperationalError,), "SQLite", when=_outage)
class SqliteStore(
    SqliteWebhooks,
    idempotency.SqliteIdempotency,
    SqliteUnitsMixin,
    SqliteEditsMixin,
    SqliteVoiceprintsMixin,
):
    """The ``Store`` port on one SQLite file (chunk units: ``SqliteUnitsMixin``; edits
    and queue facts: ``SqliteEditsMixin``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = str(path)
        self._busy_timeout_s = busy_timeout_s
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # One writer at a time in this process. SQLite allows one anyway; a writer that
        # finds the database locked sleeps in its busy handler (1, 2, 5 … 100 ms steps),
        # which under concurrent requests puts 100+ ms into the tail. Threads of one
        # process queue here instead; other processes still meet the busy timeout.
        self._writing = threading.Lock()
        db = self._conn()
        # executescript manages its own transaction
        db.executescript(
            _SCHEMA
            + WEBHOOK_SCHEMA
            + idempotency.SCHEMA
            + UNITS_SCHEMA
            + RUNS_SCHEMA
            + VOICEPRINTS_SCHEMA
        )
        columns = {r["name"] for r in db.execute("PRAGMA table_info(transcriptions)")}
        if "metadata" not in columns:  # a database made before transcripts had metadata
            db.execute("ALTER TABLE transcriptions ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'")
        key_columns = {r["name"] for r in db.execute("PRAGMA table_info(api_keys)")}
        if "last_used_at" not in key_columns:  # a database made before keys kept their use
            db.execute("ALTER TABLE api_keys ADD COLUMN last_used_at REAL")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> SqliteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        if not url.startswith("sqlite:///"):
            raise ValueError(f"not a sqlite URL: {url!r}")
        path = url.removeprefix("sqlite:///") or ":memory:"
        return cls(path, clock=clock, busy_timeout_s=busy_timeout_s)

    # --- connection handling ---------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={round(self._busy_timeout_s * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._writing:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, I/O)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # --- recordings ---------------------------------------------------------------
    def add_recording(self, recording: Recording) -> None:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO recordings VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        recording.tenant,
                        recording.id,
                        recording.created_at.timestamp(),
                        recording.media_key,
                        recording.filename,
                        recording.content_type,
                        recording.size,
                        media_to_json(recording),
                        _json(recording.metadata),
                    ),
                )
                self._emit_recording(db, recording)
        except sqlite3.IntegrityError:
            raise Conflict(f"recording {recording.id!r} already exists") from None

    def get_recording(self, tenant: str, recording_id: str) -> Recording:
        row = (
            self._conn()
            .execute("SELECT * FROM recordings WHERE tenant=? AND id=?", (tenant, recording_id))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"recording {recording_id!r} not found")
        return recording_from_row(dict(row))

    def list_recordings(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Recording]:
        sql = "SELECT * FROM recordings WHERE tenant=?"
        args: list[object] = [tenant]
        return self._page(sql, args, cursor, limit, recording_from_row)

    def _page(
        self,
        sql: str,
        args: list[object],
        cursor: str | None,
        limit: int,
        build: Callable[[dict[str, Any]], T],
    ) -> Page[T]:
        """Newest first from ``sql`` (a SELECT with its WHERE), continuing after ``cursor``."""
        if cursor:
            ts, item_id = decode_cursor(cursor)
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args = [*args, ts, ts, item_id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self._conn().execute(sql, [*args, limit + 1]).fetchall()
        items = [build(dict(r)) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            last = rows[limit - 1]
            nxt = encode_cursor(last["created_at"], last["id"])
        return Page(items, nxt)

    def delete_recording(
        self, tenant: str, recording_id: str
    ) -> tuple[Recording, list[Transcription]]:
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM recordings WHERE tenant=? AND id=?", (tenant, recording_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"recording {recording_id!r} not found")
            trs = db.execute(
                "SELECT * FROM transcriptions WHERE tenant=? AND recording_id=?",
                (tenant, recording_id),
            ).fetchall()
            ids = [(t["id"],) for t in trs]
            db.executemany("DELETE FROM chunks WHERE transcription_id=?", ids)
            db.executemany("DELETE FROM transcriptions WHERE id=?", ids)
            db.execute("DELETE FROM recordings WHERE tenant=? AND id=?", (tenant, recording_id))
        return recording_from_row(dict(row)), [transcription_from_row(dict(t)) for t in trs]

    # --- transcriptions -------------------------------------------------------------
    def add_transcription(self, transcription: Transcription, *, limit: int | None = None) -> None:
        t = transcription
        with self._tx() as db:
            exists = db.execute(
                "SELECT 1 FROM recordings WHERE tenant=? AND id=?", (t.tenant, t.recording_id)
            ).fetchone()
            if exists is None:
                raise NotFound(f"recording {t.recording_id!r} not found")
            if limit is not None:
                count = db.execute(
                    "SELECT COUNT(*) FROM transcriptions WHERE tenant=? AND recording_id=?",
                    (t.tenant, t.recording_id),
                ).fetchone()[0]
                if count >= limit:
                    raise LimitReached(limit_message(t.recording_id, limit))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM transcriptions").fetchone()[0]
            if db.execute("SELECT 1 FROM transcriptions WHERE id=?", (t.id,)).fetchone():
                raise Conflict(f"transcription {t.id!r} already exists")
            db.execute(
                "INSERT INTO transcriptions (id, tenant, recording_id, status, options,"
                " created_at, updated_at, progress, attempts, seq, metadata)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    t.id,
                    t.tenant,
                    t.recording_id,
                    t.status.value,
                    options_to_json(t.options),
                    t.created_at.timestamp(),
                    t.updated_at.timestamp(),
                    t.progress,
                    t.attempts,
                    seq,
                    _json(t.metadata),
                ),
            )

    def get_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        row = (
            self._conn()
            .execute(
                "SELECT * FROM transcriptions WHERE tenant=? AND id=?", (tenant, transcription_id)
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"transcription {transcription_id!r} not found")
        return transcription_from_row(dict(row))

    def list_transcriptions(
        self, tenant: str, *, recording_id: str | None, limit: int, cursor: str | None
    ) -> Page[Transcription]:
        sql = "SELECT * FROM transcriptions WHERE tenant=?"
        args: list[object] = [tenant]
        if recording_id is not None:
            sql += " AND recording_id=?"
            args.append(recording_id)
        return self._page(sql, args, cursor, limit, transcription_from_row)

    def delete_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM transcriptions WHERE tenant=? AND id=?",
                (tenant, transcription_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"transcription {transcription_id!r} not found")
            db.execute("DELETE FROM chunks WHERE transcription_id=?", (transcription_id,))
            db.execute("DELETE FROM transcriptions WHERE id=?", (transcription_id,))
        return transcription_from_row(dict(row))

    # --- the queue ------------------------------------------------------------------
    def claim(self, worker_id: str, *, lease_s: float, max_attempts: int) -> Transcription | None:
        with self._tx() as db:
            while True:
                now = self._clock()
                row = db.execute(
                    "SELECT * FROM transcriptions WHERE status=? OR (status=? AND lease_expires<?)"
                    " ORDER BY seq LIMIT 1",
                    (TranscriptionStatus.QUEUED.value, TranscriptionStatus.PROCESSING.value, now),
                ).fetchone()
                if row is None:
                    return None
                if row["status"] == TranscriptionStatus.PROCESSING and (
                    row["attempts"] >= max_attempts
                ):
                    db.execute(
                        "UPDATE transcriptions SET status=?, updated_at=?, lease_owner=NULL,"
                        " lease_expires=NULL, error_code=?, error_message=? WHERE id=?",
                        (
                            TranscriptionStatus.FAILED.value,
                            now,
                            "worker_lost",
                            f"the job was claimed {row['attempts']} times and its worker "
                            "stopped each time; it is not retried again",
                            row["id"],
                        ),
                    )
                    self._emit_transcript(db, row["id"])
                    continue
                db.execute(
                    "UPDATE transcriptions SET status=?, updated_at=?, lease_owner=?,"
                    " lease_expires=?, attempts=attempts+1 WHERE id=?",
                    (
                        TranscriptionStatus.PROCESSING.value,
                        now,
                        worker_id,
                        now + lease_s,
                        row["id"],
                    ),
                )
                fresh = db.execute("SELECT * FROM transcriptions WHERE id=?", (row["id"],))
                return transcription_from_row(dict(fresh.fetchone()))

    def _owned(self, db: sqlite3.Connection, transcription_id: str, worker_id: str) -> bool:
        row = db.execute(
            "SELECT 1 FROM transcriptions WHERE id=? AND status=? AND lease_owner=?"
            " AND lease_expires>=?",
            (transcription_id, TranscriptionStatus.PROCESSING.value, worker_id, self._clock()),
        ).fetchone()
        return row is not None

    def heartbeat(
        self, transcription_id: str, worker_id: str, *, progress: float, lease_s: float
    ) -> bool:
        with self._tx() as db:
            if not self._owned(db, transcription_id, worker_id):
                return False
            now = self._clock()
            db.execute(
                "UPDATE transcriptions SET progress=?, lease_expires=?, updated_at=? WHERE id=?",
                (progress, now + lease_s, now, transcription_id),
            )
            return True

    def complete(self, transcription_id: str, worker_id: str, result: TranscriptionResult) -> bool:
        with self._tx() as db:
            if not self._owned(db, transcription_id, worker_id):
                return False
            db.execute(
                "UPDATE transcriptions SET status=?, updated_at=?, progress=1, result=?,"
                " lease_owner=NULL, lease_expires=NULL WHERE id=?",
                (
                    TranscriptionStatus.COMPLETED.value,
                    self._clock(),
                    result_to_json(result),
                    transcription_id,
                ),
            )
            db.execute("DELETE FROM chunks WHERE transcription_id=?", (transcription_id,))
            self._emit_transcript(db, transcription_id)
            return True

    def fail(self, transcription_id: str, worker_id: str, error: TranscriptionError) -> bool:
        with self._tx() as db:
            if not self._owned(db, transcription_id, worker_id):
                return False
            db.execute(
                "UPDATE transcriptions SET status=?, updated_at=?, error_code=?, error_message=?,"
                " lease_owner=NULL, lease_expires=NULL WHERE id=?",
                (
                    TranscriptionStatus.FAILED.value,
                    self._clock(),
                    error.code,
                    error.message,
                    transcription_id,
                ),
            )
            self._emit_transcript(db, transcription_id)
            return True

    def release(self, transcription_id: str, worker_id: str) -> bool:
        with self._tx() as db:
            if not self._owned(db, transcription_id, worker_id):
                return False
            db.execute(
                "UPDATE transcriptions SET status=?, updated_at=?, lease_owner=NULL,"
                " lease_expires=NULL, attempts=MAX(attempts-1, 0) WHERE id=?",
                (TranscriptionStatus.QUEUED.value, self._clock(), transcription_id),
            )
            return True

    def reconcile(self) -> int:
        return 0  # the transcriptions table is the queue: nothing can go missing

    def queue_depth(self) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM transcriptions WHERE status=?",
                (TranscriptionStatus.QUEUED.value,),
            )
            .fetchone()
        )
        return int(row[0])

    # --- chunks ------------------------------------------------------------------------
    def save_chunk(self, transcription_id: str, index: int, payload: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?,?,?)", (transcription_id, index, payload)
            )

    def load_chunks(self, transcription_id: str) -> dict[int, str]:
        rows = (
            self._conn()
            .execute(
                "SELECT idx, payload FROM chunks WHERE transcription_id=?", (transcription_id,)
            )
            .fetchall()
        )
        return {int(r["idx"]): str(r["payload"]) for r in rows}

    # --- retention ------------------------------------------------------------------------
    def expired_recordings(self, created_before: float, limit: int) -> list[tuple[str, str]]:
        rows = self._conn().execute(
            "SELECT tenant, id FROM recordings WHERE created_at < ? ORDER BY created_at LIMIT ?",
            (created_before, limit),
        )
        return [(str(r["tenant"]), str(r["id"])) for r in rows]

    def prune_webhooks(self, created_before: float, limit: int) -> int:
        with self._tx() as db:
            ids = [
                str(r["id"])
                for r in db.execute(
                    "SELECT e.id FROM webhook_events e WHERE e.pending = 0 AND e.created_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE"
                    " d.tenant = e.tenant AND d.event_id = e.id AND d.status = 'pending')"
                    " ORDER BY e.seq LIMIT ?",
                    (created_before, limit),
                )
            ]
            for event_id in ids:
                db.execute(
                    "DELETE FROM webhook_attempts WHERE delivery_id IN"
                    " (SELECT id FROM webhook_deliveries WHERE event_id = ?)",
                    (event_id,),
                )
                db.execute("DELETE FROM webhook_deliveries WHERE event_id = ?", (event_id,))
                db.execute("DELETE FROM webhook_events WHERE id = ?", (event_id,))
        return len(ids)

    # --- API keys -------------------------------------------------------------------------
    def add_api_key(self, key_hash: str, *, name: str, tenant: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (key_hash, name, tenant, created_at) VALUES (?,?,?,?)",
                (key_hash, name, tenant, self._clock()),
            )

    def tenant_for_key(self, key_hash: str) -> str | None:
        row = (
            self._conn()
            .execute("SELECT tenant FROM api_keys WHERE key_hash=?", (key_hash,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        row = (
            self._conn().execute("SELECT * FROM api_keys WHERE key_hash=?", (key_hash,)).fetchone()
        )
        return None if row is None else api_key_from_row(dict(row))

    def list_api_keys(self) -> list[ApiKey]:
        rows = self._conn().execute("SELECT * FROM api_keys ORDER BY created_at, key_hash")
        return [api_key_from_row(dict(r)) for r in rows.fetchall()]

    def touch_api_key(self, key_hash: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE api_keys SET last_used_at=? WHERE key_hash=?", (self._clock(), key_hash)
            )

    def delete_api_key(self, key_hash: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM api_keys WHERE key_hash=?", (key_hash,)).rowcount > 0


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
