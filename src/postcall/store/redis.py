"""Redis store: the scaled mode's records and queue (hashes, sorted sets, a Stream).

The hashes are the source of truth; the sorted sets are indexes over them and the
Stream only carries pointers to queued jobs. Everything that must be atomic runs as
one Lua script, so any number of API processes and workers can share one Redis.

Key layout (``ns`` is the namespace, ``postcall`` by default; ``{tenant}`` has ``%``
and ``:`` escaped so that no two (tenant, id) pairs share a key)::

    {ns}:rec:{tenant}:{id}        hash    a recording
    {ns}:recs:{tenant}            zset    recording ids by created_at (listing)
    {ns}:tr:{id}                  hash    a transcription = its job (lease, attempts, seq)
    {ns}:trs:{tenant}             zset    transcription ids by created_at (listing)
    {ns}:rectrs:{tenant}:{rec}    zset    one recording's transcription ids by created_at
    {ns}:chunks:{id}              hash    chunk index -> kept chunk result
    {ns}:key:{hash}               hash    an API key's tenant and name
    {ns}:idem:… {ns}:secret:…              see ``postcall.store.redis_idempotency``
    {ns}:vp:… {ns}:vps:… {ns}:vpidx:…       see ``postcall.store.redis_voiceprints``
    {ns}:seq                      string  creation sequence (FIFO order of jobs)
    {ns}:queued                   zset    queued job ids by seq (depth, reconcile)
    {ns}:leases                   zset    processing job ids by lease expiry (takeover)
    {ns}:queue                    stream  one pointer ``id=<transcription id>`` per queued
                                          job; consumer group ``workers``

A claim first takes over the job whose lease ran out longest ago (or fails it with
``worker_lost`` after ``max_attempts`` claims), then reads the next pointer with
XREADGROUP. A pointer whose job is gone or no longer queued is acked and dropped, so
a duplicate pointer never hands one job to two workers. A claimed job's pointer stays
pending with its owner (moved with XCLAIM on takeover and heartbeat) until the job
ends. Lease times come from the injected ``clock``, not from Redis, and are passed to
the scripts as exact ``repr`` strings.

Scripts touch keys they compute from hash contents, so this backend needs a single
Redis (or a replicated primary), not Redis Cluster.

Outages: a Redis that does not answer (stopped, restarting, still loading its data,
a read-only replica after a failover) surfaces as ``StoreUnavailable`` from every
public method (``raising_unavailable``); a client made from a URL gives up on a dead server
within about a second (a short reconnecting retry, then the error) so that requests
answer 503 at once rather than hang.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from postcall.domain import (
    ApiKey,
    Recording,
    Transcription,
    TranscriptionError,
    TranscriptionResult,
    TranscriptionStatus,
)
from postcall.errors import Conflict, LimitReached, NotFound, WorkerLost
from postcall.store import redis_lua as lua
from postcall.store import redis_webhooks_lua as whlua
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
from postcall.store.redis_edits import RedisEditsMixin
from postcall.store.redis_idempotency import RedisIdempotency
from postcall.store.redis_units import RedisUnitsMixin
from postcall.store.redis_voiceprints import RedisVoiceprintsMixin
from postcall.store.redis_webhooks import RedisWebhooks
from postcall.store.unavailable import raising_unavailable

_GROUP = "workers"

#: Errors that mean "Redis does not answer now", not "the request is wrong".
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,  # refused, reset, LOADING (BusyLoadingError), auth, too many
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica that was the primary before a failover
)
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0


def _client(url: str) -> redis.Redis:
    """A client that reconnects through a blip (a few tries over about a second) and
    then reports the outage, instead of redis-py's default ten tries."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        health_check_interval=30,
    )


# Shared by every script. Pointers are dropped with pcall: a lost stream or group must
# never stop a job from being completed, failed or deleted.
def _esc(part: str) -> str:
    """Escape a key part that is followed by more parts, so ``:`` cannot forge a key."""
    return part.replace("%", "%25").replace(":", "%3A")


def _unesc(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


_TOUCH_KEY = """
if redis.call('hexists', KEYS[1], 'tenant') == 1 then
  redis.call('hset', KEYS[1], 'last_used_at', ARGV[1])
end
return 0
"""
"""Record a key's use, never re-creating a key revoked meanwhile."""


def _glob(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _num(value: float) -> str:
    """A float as the exact decimal Redis (and ``float()``) reads back."""
    return repr(float(value))


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


@raising_unavailable(OUTAGE_ERRORS, "Redis")
class RedisStore(
    RedisWebhooks, RedisIdempotency, RedisUnitsMixin, RedisEditsMixin, RedisVoiceprintsMixin
):
    """The ``Store`` port on Redis (see the module docstring for the layout; chunk
    units: ``RedisUnitsMixin``; edits and queue facts: ``RedisEditsMixin``)."""

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        *,
        clock: Callable[[], float] = time.time,
        namespace: str = "postcall",
    ) -> None:
        if isinstance(client_or_url, str):
            self._client = _client(client_or_url)
            self._owns_client = True
        else:
            if not client_or_url.get_connection_kwargs().get("decode_responses"):
                raise ValueError("the Redis client must be made with decode_responses=True")
            self._client = client_or_url
            self._owns_client = False
        self._clock = clock
        self._ns = namespace
        self._queued = f"{namespace}:queued"
        self._leases = f"{namespace}:leases"
        self._stream = f"{namespace}:queue"
        self._seq = f"{namespace}:seq"
        reg = self._client.register_script
        self._add_recording = reg(lua.LIB + whlua.EMIT + lua.ADD_RECORDING)
        self._add_transcription = reg(lua.LIB + lua.ADD_TRANSCRIPTION)
        self._delete_transcription = reg(lua.LIB + lua.DELETE_TRANSCRIPTION)
        self._delete_recording = reg(lua.LIB + lua.DELETE_RECORDING)
        self._claim = reg(lua.LIB + whlua.EMIT + lua.CLAIM)
        self._heartbeat = reg(lua.LIB + lua.HEARTBEAT)
        self._finish = reg(lua.LIB + whlua.EMIT + lua.FINISH)
        self._reconcile = reg(lua.LIB + lua.RECONCILE)
        self._prune_event = reg(whlua.PRUNE_EVENT)
        self._touch_key = reg(_TOUCH_KEY)
        self._init_webhooks()
        self._init_idempotency()
        self._init_units()
        self._init_edits()
        self._init_voiceprints()

    @classmethod
    def from_url(
        cls, url: str, *, clock: Callable[[], float] = time.time, namespace: str = "postcall"
    ) -> RedisStore:
        """``redis://[:password@]host:port/db`` (also ``rediss://`` and ``unix://``)."""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a redis URL: {url!r}")
        return cls(url, clock=clock, namespace=namespace)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # --- keys ------------------------------------------------------------------------
    def _rec(self, tenant: str, recording_id: str) -> str:
        return f"{self._ns}:rec:{_esc(tenant)}:{recording_id}"

    def _recs(self, tenant: str) -> str:
        return f"{self._ns}:recs:{_esc(tenant)}"

    def _tr(self, transcription_id: str = "") -> str:
        return f"{self._ns}:tr:{transcription_id}"

    def _trs(self, tenant: str) -> str:
        return f"{self._ns}:trs:{_esc(tenant)}"

    def _rectrs(self, tenant: str, recording_id: str = "") -> str:
        return f"{self._ns}:rectrs:{_esc(tenant)}:{recording_id}"

    def _chunks(self, transcription_id: str = "") -> str:
        return f"{self._ns}:chunks:{transcription_id}"

    # --- recordings ------------------------------------------------------------------
    def add_recording(self, recording: Recording) -> None:
        r = recording
        fields = {
            "id": r.id,
            "tenant": r.tenant,
            "created_at": _num(r.created_at.timestamp()),
            "media_key": r.media_key,
            "filename": r.filename,
            "content_type": r.content_type,
            "size": str(r.size),
            "media": media_to_json(r),
            "metadata": _json(r.metadata),
        }
        keys = [self._rec(r.tenant, r.id), self._recs(r.tenant), *self._wh_emit_keys()]
        args = [r.id, fields["created_at"], *_flatten(fields)]
        if not self._add_recording(keys, args):
            raise Conflict(f"recording {r.id!r} already exists")

    def get_recording(self, tenant: str, recording_id: str) -> Recording:
        row = cast(dict[str, str], self._client.hgetall(self._rec(tenant, recording_id)))
        if not row:
            raise NotFound(f"recording {recording_id!r} not found")
        return recording_from_row(row)

    def list_recordings(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Recording]:
        ids, nxt = self._page(self._recs(tenant), limit, cursor)
        rows = self._hashes([self._rec(tenant, i) for i in ids])
        return Page([recording_from_row(row) for row in rows], nxt)

    def delete_recording(
        self, tenant: str, recording_id: str
    ) -> tuple[Recording, list[Transcription]]:
        keys = [
            self._rec(tenant, recording_id),
            self._recs(tenant),
            self._trs(tenant),
            self._rectrs(tenant, recording_id),
            self._queued,
            self._leases,
            self._stream,
        ]
        out = self._delete_recording(keys, [recording_id, self._tr(), self._chunks(), _GROUP])
        if not out:
            raise NotFound(f"recording {recording_id!r} not found")
        rec, *trs = out
        return recording_from_row(_pairs(rec)), [transcription_from_row(_pairs(t)) for t in trs]

    # --- transcriptions --------------------------------------------------------------
    def add_transcription(self, transcription: Transcription, *, limit: int | None = None) -> None:
        t = transcription
        created = _num(t.created_at.timestamp())
        fields = {
            "id": t.id,
            "tenant": t.tenant,
            "recording_id": t.recording_id,
            "status": t.status.value,
            "options": options_to_json(t.options),
            "created_at": created,
            "updated_at": _num(t.updated_at.timestamp()),
            "progress": _num(t.progress),
            "attempts": str(t.attempts),
            "metadata": _json(t.metadata),
        }
        keys = [
            self._rec(t.tenant, t.recording_id),
            self._tr(t.id),
            self._trs(t.tenant),
            self._rectrs(t.tenant, t.recording_id),
            self._queued,
            self._seq,
            self._stream,
        ]
        cap = str(limit) if limit is not None else ""
        args = [t.id, created, t.status.value, cap, *_flatten(fields)]
        outcome = self._add_transcription(keys, args)
        if outcome == "no_recording":
            raise NotFound(f"recording {t.recording_id!r} not found")
        if outcome == "limit" and limit is not None:
            raise LimitReached(limit_message(t.recording_id, limit))
        if outcome == "exists":
            raise Conflict(f"transcription {t.id!r} already exists")

    def get_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        row = cast(dict[str, str], self._client.hgetall(self._tr(transcription_id)))
        if row.get("tenant") != tenant:
            raise NotFound(f"transcription {transcription_id!r} not found")
        return transcription_from_row(row)

    def list_transcriptions(
        self, tenant: str, *, recording_id: str | None, limit: int, cursor: str | None
    ) -> Page[Transcription]:
        index = self._trs(tenant) if recording_id is None else self._rectrs(tenant, recording_id)
        ids, nxt = self._page(index, limit, cursor)
        rows = self._hashes([self._tr(i) for i in ids])
        return Page([transcription_from_row(r) for r in rows if r.get("tenant") == tenant], nxt)

    def delete_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        keys = [
            self._tr(transcription_id),
            self._trs(tenant),
            self._chunks(transcription_id),
            self._queued,
            self._leases,
            self._stream,
        ]
        flat = self._delete_transcription(keys, [tenant, self._rectrs(tenant), _GROUP])
        if not flat:
            raise NotFound(f"transcription {transcription_id!r} not found")
        return transcription_from_row(_pairs(flat))

    # --- the queue -------------------------------------------------------------------
    def claim(self, worker_id: str, *, lease_s: float, max_attempts: int) -> Transcription | None:
        now = self._clock()
        flat = self._claim(
            [self._leases, self._queued, self._stream, self._wh_pending],
            [
                self._tr(),
                _GROUP,
                worker_id,
                _num(now),
                _num(now + lease_s),
                str(max_attempts),
                WorkerLost.code,
                *self._wh_emit_args(),
            ],
        )
        return transcription_from_row(_pairs(flat)) if flat else None

    def heartbeat(
        self, transcription_id: str, worker_id: str, *, progress: float, lease_s: float
    ) -> bool:
        now = self._clock()
        keys = [self._tr(transcription_id), self._leases, self._stream]
        args = [_GROUP, worker_id, _num(now), _num(now + lease_s), _num(progress)]
        return bool(self._heartbeat(keys, args))

    def _end(self, transcription_id: str, worker_id: str, outcome: str, *fields: str) -> bool:
        keys = [
            self._tr(transcription_id),
            self._leases,
            self._stream,
            self._chunks(transcription_id),
            self._queued,
            *self._wh_emit_keys(),
        ]
        return bool(self._finish(keys, [_GROUP, worker_id, _num(self._clock()), outcome, *fields]))

    def complete(self, transcription_id: str, worker_id: str, result: TranscriptionResult) -> bool:
        payload = result_to_json(result) or ""
        done = TranscriptionStatus.COMPLETED.value
        return self._end(transcription_id, worker_id, done, "progress", "1", "result", payload)

    def fail(self, transcription_id: str, worker_id: str, error: TranscriptionError) -> bool:
        return self._end(
            transcription_id,
            worker_id,
            TranscriptionStatus.FAILED.value,
            "error_code",
            error.code,
            "error_message",
            error.message,
        )

    def release(self, transcription_id: str, worker_id: str) -> bool:
        return self._end(transcription_id, worker_id, TranscriptionStatus.QUEUED.value)

    def queue_depth(self) -> int:
        return int(self._client.zcard(self._queued))

    def reconcile(self, *, batch: int = 500) -> int:
        """Give every queued job without a live stream pointer a new one; return how many.

        A pointer is live while it is in the stream and not yet delivered to the group.
        Pointers go missing when the stream key is lost while the hashes survive (a
        trimmed or deleted stream, a partial restore). ``claim`` already re-points the
        oldest such job when the stream runs dry, so nothing is stranded; this repairs
        them all at once (workers call it now and then). Safe to run at any time and
        from many processes: a job that ends up with two pointers is claimed once.
        """
        restored, after = 0, "0"
        while True:
            n, after, seen = self._reconcile(
                [self._queued, self._stream], [self._tr(), _GROUP, after, str(batch)]
            )
            restored += int(n)
            if int(seen) < batch:
                return restored

    # --- chunks ----------------------------------------------------------------------
    def save_chunk(self, transcription_id: str, index: int, payload: str) -> None:
        self._client.hset(self._chunks(transcription_id), str(index), payload)

    def load_chunks(self, transcription_id: str) -> dict[int, str]:
        raw = cast(dict[str, str], self._client.hgetall(self._chunks(transcription_id)))
        return {int(k): v for k, v in raw.items()}

    # --- retention -------------------------------------------------------------------
    def expired_recordings(self, created_before: float, limit: int) -> list[tuple[str, str]]:
        # Found by scanning the tenants' listing indexes: sweeps are rare, and so no
        # index of its own has to be kept (or built for recordings made before it).
        prefix = f"{self._ns}:recs:"
        found: list[tuple[float, str, str]] = []
        for key in self._client.scan_iter(match=prefix + "*", count=500):
            tenant = _unesc(str(key)[len(prefix) :])
            rows = cast(
                list[tuple[str, float]],
                self._client.zrangebyscore(
                    key, "-inf", f"({_num(created_before)}", 0, limit, withscores=True
                ),
            )
            found += [(score, tenant, rec_id) for rec_id, score in rows]
        return [(tenant, rec_id) for _, tenant, rec_id in sorted(found)[:limit]]

    def prune_webhooks(self, created_before: float, limit: int) -> int:
        pruned = 0
        for key in self._client.scan_iter(match=self._wh("evt", "*"), count=500):
            if pruned >= limit:
                break
            event_id = str(key).rsplit(":", 1)[-1]
            keys = [key, self._wh_pending, self._wh("evdl", event_id), self._wh("due")]
            args = [
                _num(created_before),
                event_id,
                self._wh("dl", ""),
                self._wh("log", ""),
                self._wh("epdl", ""),
            ]
            pruned += int(self._prune_event(keys, args))
        return pruned

    # --- API keys --------------------------------------------------------------------
    def add_api_key(self, key_hash: str, *, name: str, tenant: str) -> None:
        key = f"{self._ns}:key:{key_hash}"
        self._client.hset(
            key, mapping={"name": name, "tenant": tenant, "created_at": self._clock()}
        )

    def tenant_for_key(self, key_hash: str) -> str | None:
        return cast(str | None, self._client.hget(f"{self._ns}:key:{key_hash}", "tenant"))

    def get_api_key(self, key_hash: str) -> ApiKey | None:
        row = cast(dict[str, str], self._client.hgetall(f"{self._ns}:key:{key_hash}"))
        if "tenant" not in row:
            return None
        return api_key_from_row({**row, "key_hash": key_hash})

    def list_api_keys(self) -> list[ApiKey]:
        prefix = f"{self._ns}:key:"
        # A few keys at most: SCAN is enough, and finds keys made before any index.
        names = sorted(
            name
            for name in self._client.scan_iter(match=f"{_glob(prefix)}*", count=1000)
            if isinstance(name, str) and name.startswith(prefix)
        )
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        found = []
        for name, row in zip(names, pipe.execute(), strict=True):
            if "tenant" in row:  # revoked meanwhile: gone
                found.append(api_key_from_row({**row, "key_hash": name.removeprefix(prefix)}))
        return sorted(found, key=lambda k: (k.created_at, k.key_hash))

    def touch_api_key(self, key_hash: str) -> None:
        self._touch_key([f"{self._ns}:key:{key_hash}"], [_num(self._clock())])

    def delete_api_key(self, key_hash: str) -> bool:
        return bool(self._client.delete(f"{self._ns}:key:{key_hash}"))

    # --- listing helpers -------------------------------------------------------------
    def _page(self, index: str, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        """Ids of one page of ``index`` (newest first, by score then id) and the next cursor.

        Works by score, not rank, so items added at the top while a client pages do not
        shift its pages. Within the cursor's own score, members are ordered by id, and a
        binary search finds the first one below the cursor's id.
        """
        top, skip = "+inf", 0
        if cursor:
            ts, cursor_id = decode_cursor(cursor)
            if math.isnan(ts):
                return [], None
            top = _num(ts) if math.isfinite(ts) else ("+inf" if ts > 0 else "-inf")
            lo, hi = 0, int(self._client.zcount(index, top, top))
            while lo < hi:
                mid = (lo + hi) // 2
                at = cast(list[str], self._client.zrevrangebyscore(index, top, top, mid, 1))
                if not at or at[0] < cursor_id:
                    hi = mid
                else:
                    lo = mid + 1
            skip = lo
        rows = cast(
            list[tuple[str, float]],
            self._client.zrevrangebyscore(index, top, "-inf", skip, limit + 1, withscores=True),
        )
        nxt = None
        if len(rows) > limit:
            last_id, last_score = rows[limit - 1]
            nxt = encode_cursor(last_score, last_id)
        return [member for member, _ in rows[:limit]], nxt

    def _hashes(self, keys: list[str]) -> list[dict[str, Any]]:
        """The hashes at ``keys``, in order, leaving out any deleted meanwhile."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [row for row in pipe.execute() if row]


def _flatten(fields: dict[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
