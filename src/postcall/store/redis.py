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
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from postcall.domain import (
    Recording,
    Transcription,
    TranscriptionError,
    TranscriptionResult,
    TranscriptionStatus,
)
from postcall.errors import Conflict, NotFound, WorkerLost
from postcall.store.base import (
    Page,
    decode_cursor,
    encode_cursor,
    media_to_json,
    options_to_json,
    recording_from_row,
    result_to_json,
    transcription_from_row,
)

_GROUP = "workers"

# Shared by every script. Pointers are dropped with pcall: a lost stream or group must
# never stop a job from being completed, failed or deleted.
_LIB = """
local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h, flat
end
local function owned(h, worker, now)
  local expires = tonumber(h.lease_expires or '')
  return h.status == 'processing' and h.lease_owner == worker
    and expires ~= nil and expires >= now
end
local function drop_pointer(stream, group, entry)
  if entry then
    redis.pcall('XACK', stream, group, entry)
    redis.pcall('XDEL', stream, entry)
  end
end
local function forget_consumer(stream, group, consumer)
  if not consumer then return end
  local p = redis.pcall('XPENDING', stream, group, '-', '+', 1, consumer)
  if type(p) == 'table' and not p.err and #p == 0 then
    redis.pcall('XGROUP', 'DELCONSUMER', stream, group, consumer)
  end
end
local function enqueue(key, queued, stream, h)
  redis.call('ZADD', queued, h.seq, h.id)
  local entry = redis.call('XADD', stream, '*', 'id', h.id)
  redis.call('HSET', key, 'entry', entry)
end
"""

# KEYS: rec, recs index. ARGV: id, created_at, field/value pairs...
_ADD_RECORDING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: rec, tr, trs index, rectrs index, queued, seq, stream.
# ARGV: id, created_at, status, field/value pairs...
_ADD_TRANSCRIPTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'no_recording' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'exists' end
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[2], 'seq', seq, unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
if ARGV[3] == 'queued' then enqueue(KEYS[2], KEYS[5], KEYS[7], {id = ARGV[1], seq = seq}) end
return 'ok'
"""

# KEYS: tr, trs index, chunks, queued, leases, stream. ARGV: tenant, rectrs prefix, group.
_DELETE_TRANSCRIPTION = """
local h, flat = hgetall(KEYS[1])
if h.tenant ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], h.id)
redis.call('ZREM', ARGV[2] .. h.recording_id, h.id)
redis.call('ZREM', KEYS[4], h.id)
redis.call('ZREM', KEYS[5], h.id)
drop_pointer(KEYS[6], ARGV[3], h.entry)
forget_consumer(KEYS[6], ARGV[3], h.lease_owner)
return flat
"""

# KEYS: rec, recs index, trs index, rectrs index, queued, leases, stream.
# ARGV: recording id, tr prefix, chunks prefix, group.
_DELETE_RECORDING = """
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return false end
local out = {rec}
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local h, flat = hgetall(ARGV[2] .. id)
  if #flat > 0 then
    redis.call('DEL', ARGV[2] .. id, ARGV[3] .. id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[5], id)
    redis.call('ZREM', KEYS[6], id)
    drop_pointer(KEYS[7], ARGV[4], h.entry)
    forget_consumer(KEYS[7], ARGV[4], h.lease_owner)
    table.insert(out, flat)
  end
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return out
"""

# KEYS: leases, queued, stream. ARGV: tr prefix, group, worker, now, expires,
# max_attempts, worker_lost code. Returns the claimed job's hash, or false.
_CLAIM = """
local leases, queued, stream = KEYS[1], KEYS[2], KEYS[3]
local pfx, group, worker, now_s, expires = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, max_attempts = tonumber(now_s), tonumber(ARGV[6])

local function take(key, id)
  redis.call('HSET', key, 'status', 'processing', 'updated_at', now_s,
    'lease_owner', worker, 'lease_expires', expires)
  redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('ZREM', queued, id)
  redis.call('ZADD', leases, expires, id)
  return redis.call('HGETALL', key)
end

-- 1. Take over the job whose lease ran out longest ago (its worker is gone).
while true do
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now_s, 'LIMIT', 0, 1)
  if #due == 0 then break end
  local id = due[1]
  local key = pfx .. id
  local h = hgetall(key)
  local lease = tonumber(h.lease_expires or '')
  if h.status ~= 'processing' or lease == nil then
    redis.call('ZREM', leases, id)  -- stale index entry: the hash is the truth
  elseif lease >= now then
    redis.call('ZADD', leases, h.lease_expires, id)
  elseif tonumber(h.attempts) >= max_attempts then
    redis.call('HSET', key, 'status', 'failed', 'updated_at', now_s, 'error_code', ARGV[7],
      'error_message', 'the job was claimed ' .. h.attempts
        .. ' times and its worker stopped each time; it is not retried again')
    redis.call('HDEL', key, 'lease_owner', 'lease_expires', 'entry')
    redis.call('ZREM', leases, id)
    drop_pointer(stream, group, h.entry)
    forget_consumer(stream, group, h.lease_owner)
  else
    if h.entry then redis.pcall('XCLAIM', stream, group, worker, 0, h.entry, 'JUSTID') end
    if h.lease_owner ~= worker then forget_consumer(stream, group, h.lease_owner) end
    return take(key, id)
  end
end

-- 2. The next pointer. At most one re-pointing per call (see below).
local repointed = false
while true do
  local r = redis.pcall('XREADGROUP', 'GROUP', group, worker, 'COUNT', 1,
    'STREAMS', stream, '>')
  if type(r) == 'table' and r.err then  -- no group (or no stream) yet: from the start
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    r = redis.call('XREADGROUP', 'GROUP', group, worker, 'COUNT', 1, 'STREAMS', stream, '>')
  end
  if r and #r[1][2] > 0 then
    local entry, fields = r[1][2][1][1], r[1][2][1][2]
    local id = nil
    for i = 1, #fields, 2 do if fields[i] == 'id' then id = fields[i + 1] end end
    local key = pfx .. (id or '')
    local h = hgetall(key)
    if id and h.status == 'queued' then
      if h.entry ~= entry then drop_pointer(stream, group, h.entry) end
      redis.call('HSET', key, 'entry', entry)
      return take(key, id)
    end
    drop_pointer(stream, group, entry)  -- the job is gone or already taken
  else
    -- No unread pointer, yet a job may be queued: its pointer was lost (a flushed or
    -- trimmed stream). Give the oldest one a new pointer now rather than strand it.
    local oldest = redis.call('ZRANGE', queued, 0, 0)
    if #oldest == 0 then break end
    local key = pfx .. oldest[1]
    local h = hgetall(key)
    if h.status ~= 'queued' then
      redis.call('ZREM', queued, oldest[1])
    elseif repointed then
      return take(key, oldest[1])  -- the group does not deliver new entries: take it as is
    else
      drop_pointer(stream, group, h.entry)
      enqueue(key, queued, stream, h)
      repointed = true
    end
  end
end
forget_consumer(stream, group, worker)
return false
"""

# KEYS: tr, leases, stream. ARGV: group, worker, now, expires, progress.
_HEARTBEAT = """
local h = hgetall(KEYS[1])
if not owned(h, ARGV[2], tonumber(ARGV[3])) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[5], 'lease_expires', ARGV[4], 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], h.id)
if h.entry then redis.pcall('XCLAIM', KEYS[3], ARGV[1], ARGV[2], 0, h.entry, 'JUSTID') end
return 1
"""

# KEYS: tr, leases, stream, chunks, queued. ARGV: group, worker, now, outcome, field/values...
# outcome: 'completed' (drops kept chunks), 'failed', or 'queued' (a release).
_FINISH = """
local h = hgetall(KEYS[1])
if not owned(h, ARGV[2], tonumber(ARGV[3])) then return 0 end
local outcome = ARGV[4]
redis.call('HSET', KEYS[1], 'status', outcome, 'updated_at', ARGV[3], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires', 'entry')
redis.call('ZREM', KEYS[2], h.id)
drop_pointer(KEYS[3], ARGV[1], h.entry)
forget_consumer(KEYS[3], ARGV[1], ARGV[2])
if outcome == 'completed' then redis.call('DEL', KEYS[4]) end
if outcome == 'queued' then
  local attempts = math.max(tonumber(h.attempts) - 1, 0)
  redis.call('HSET', KEYS[1], 'attempts', attempts)
  enqueue(KEYS[1], KEYS[5], KEYS[3], h)
end
return 1
"""

# KEYS: queued, stream. ARGV: tr prefix, group, seq to start after, batch size.
# Returns {re-pointed, last seq seen, ids seen}.
_RECONCILE = """
local queued, stream, pfx, group = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local function split(entry)
  local ms, sq = string.match(entry, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(sq)
end
-- A pointer is live when it is still in the stream and not yet delivered.
local delivered = nil
if redis.call('EXISTS', stream) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info.name == group then delivered = info['last-delivered-id'] end
  end
end
local function live(entry)
  if not entry or #redis.call('XRANGE', stream, entry, entry) == 0 then return false end
  if not delivered then return true end
  local ems, esq = split(entry)
  local dms, dsq = split(delivered)
  return ems > dms or (ems == dms and esq > dsq)
end
local rows = redis.call('ZRANGEBYSCORE', queued, '(' .. ARGV[3], '+inf',
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local restored, last = 0, ARGV[3]
for i = 1, #rows, 2 do
  local id = rows[i]
  last = rows[i + 1]
  local key = pfx .. id
  local h = hgetall(key)
  if h.status ~= 'queued' then
    redis.call('ZREM', queued, id)
  elseif not live(h.entry) then
    drop_pointer(stream, group, h.entry)
    enqueue(key, queued, stream, h)
    restored = restored + 1
  end
end
return {restored, last, #rows / 2}
"""


def _esc(part: str) -> str:
    """Escape a key part that is followed by more parts, so ``:`` cannot forge a key."""
    return part.replace("%", "%25").replace(":", "%3A")


def _num(value: float) -> str:
    """A float as the exact decimal Redis (and ``float()``) reads back."""
    return repr(float(value))


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisStore:
    """The ``Store`` port on Redis (see the module docstring for the layout)."""

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        *,
        clock: Callable[[], float] = time.time,
        namespace: str = "postcall",
    ) -> None:
        if isinstance(client_or_url, str):
            self._client = redis.Redis.from_url(client_or_url, decode_responses=True)
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
        self._add_recording = reg(_LIB + _ADD_RECORDING)
        self._add_transcription = reg(_LIB + _ADD_TRANSCRIPTION)
        self._delete_transcription = reg(_LIB + _DELETE_TRANSCRIPTION)
        self._delete_recording = reg(_LIB + _DELETE_RECORDING)
        self._claim = reg(_LIB + _CLAIM)
        self._heartbeat = reg(_LIB + _HEARTBEAT)
        self._finish = reg(_LIB + _FINISH)
        self._reconcile = reg(_LIB + _RECONCILE)

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
        keys = [self._rec(r.tenant, r.id), self._recs(r.tenant)]
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
    def add_transcription(self, transcription: Transcription) -> None:
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
        outcome = self._add_transcription(keys, [t.id, created, t.status.value, *_flatten(fields)])
        if outcome == "no_recording":
            raise NotFound(f"recording {t.recording_id!r} not found")
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
            [self._leases, self._queued, self._stream],
            [
                self._tr(),
                _GROUP,
                worker_id,
                _num(now),
                _num(now + lease_s),
                str(max_attempts),
                WorkerLost.code,
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

    # --- API keys --------------------------------------------------------------------
    def add_api_key(self, key_hash: str, *, name: str, tenant: str) -> None:
        key = f"{self._ns}:key:{key_hash}"
        self._client.hset(
            key, mapping={"name": name, "tenant": tenant, "created_at": self._clock()}
        )

    def tenant_for_key(self, key_hash: str) -> str | None:
        return cast(str | None, self._client.hget(f"{self._ns}:key:{key_hash}", "tenant"))

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
