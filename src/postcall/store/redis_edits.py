"""Edits and queue facts on Redis (see ``postcall.store.edits``): a mixin of ``RedisStore``.

Besides the store's own keys::

    {ns}:runs     list    recent runs, newest first, "audio_s elapsed_s" (trimmed)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis

from postcall.domain import Recording, Transcription
from postcall.errors import NotFound
from postcall.store import redis_lua as lua
from postcall.store import redis_units_lua as ulua
from postcall.store import redis_webhooks_lua as whlua
from postcall.store.base import recording_from_row, transcription_from_row
from postcall.store.edits import KEPT_RUNS, Run, not_failed

# KEYS: rec. ARGV: metadata JSON. Returns the updated hash, or false when absent.
_QUEUE_POSITION = """
local h = redis.call('HMGET', KEYS[1], 'status', 'seq')
if h[1] ~= 'queued' or not h[2] then return false end
return redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. h[2]) + 1
"""
"""KEYS: the transcription, the queued index. Its place in the queue (1 = next), or nil."""

_UPDATE_METADATA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'metadata', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: tr, queued, seq, stream, units, upend, ujobs, uleases, usplit.
# ARGV: tenant, now. Returns {'ok', hash...}, {'not_found'} or {'status', <status>}.
_RETRY = """
local h = hgetall(KEYS[1])
if h.tenant ~= ARGV[1] then return {'not_found'} end
if h.status ~= 'failed' then return {'status', h.status} end
local seq = redis.call('INCR', KEYS[3])
redis.call('HDEL', KEYS[1], 'error_code', 'error_message', 'result', 'lease_owner',
  'lease_expires', 'entry')
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[2], 'progress', '0',
  'attempts', '0', 'seq', seq)
drop_units(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], h.id)
enqueue(KEYS[1], KEYS[2], KEYS[4], {id = h.id, seq = seq})
local _, flat = hgetall(KEYS[1])
return {'ok', unpack(flat)}
"""


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisEditsMixin:
    """``EditStore`` for ``RedisStore`` (which provides the client, clock and keys)."""

    _client: redis.Redis
    _clock: Callable[[], float]
    _ns: str
    _queued: str
    _leases: str
    _stream: str
    _seq: str
    _ujobs: str
    _uleases: str
    _usplit: str
    _rec: Callable[[str, str], str]
    _tr: Callable[..., str]
    _units: Callable[..., str]
    _upend: Callable[..., str]

    def _init_edits(self) -> None:
        reg = self._client.register_script
        self._update_metadata = reg(_UPDATE_METADATA)
        self._retry = reg(lua.LIB + whlua.EMIT + ulua.ULIB + _RETRY)
        self._position = reg(_QUEUE_POSITION)
        self._runs = f"{self._ns}:runs"

    def update_recording_metadata(
        self, tenant: str, recording_id: str, metadata: Mapping[str, Any]
    ) -> Recording:
        raw = json.dumps(dict(metadata), ensure_ascii=False)
        flat = self._update_metadata([self._rec(tenant, recording_id)], [raw])
        if not flat:
            raise NotFound(f"recording {recording_id!r} not found")
        return recording_from_row(_pairs(flat))

    def retry_transcription(self, tenant: str, transcription_id: str) -> Transcription:
        tid = transcription_id
        keys = [
            self._tr(tid),
            self._queued,
            self._seq,
            self._stream,
            self._units(tid),
            self._upend(tid),
            self._ujobs,
            self._uleases,
            self._usplit,
        ]
        out = self._retry(keys, [tenant, repr(float(self._clock()))])
        if out[0] == "not_found":
            raise NotFound(f"transcription {tid!r} not found")
        if out[0] == "status":
            raise not_failed(tid, str(out[1]))
        return transcription_from_row(_pairs(out[1:]))

    def queue_position(self, transcription_id: str) -> int | None:
        # One round trip: every status poll of a queued job asks this.
        position = self._position([self._tr(transcription_id), self._queued], [])
        return None if position is None else int(position)

    def processing_count(self) -> int:
        now = repr(float(self._clock()))
        return int(self._client.zcount(self._leases, now, "+inf"))

    def record_run(self, audio_s: float, elapsed_s: float) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.lpush(self._runs, f"{float(audio_s)!r} {float(elapsed_s)!r}")
        pipe.ltrim(self._runs, 0, KEPT_RUNS - 1)
        pipe.execute()

    def recent_runs(self, limit: int) -> list[Run]:
        rows = cast(list[str], self._client.lrange(self._runs, 0, max(0, limit - 1)))
        runs = []
        for row in rows:
            audio, _, elapsed = row.partition(" ")
            runs.append(Run(float(audio), float(elapsed)))
        return runs
