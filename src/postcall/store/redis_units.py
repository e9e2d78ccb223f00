"""Chunk units on Redis (see ``postcall.store.units``): a mixin of ``RedisStore``.

Key layout, besides the store's own (``{tid}`` is a transcription id)::

    {ns}:units:{tid}     hash    planned, done, running (units in flight), served
                                 (when last served, on the ``{ns}:seq`` counter that
                                 also numbers queued jobs), and per unit ``i``:
                                 s:i spec, st:i status, a:i attempts, o:i owner,
                                 e:i lease expiry
    {ns}:upend:{tid}     zset    the job's pending unit indices
    {ns}:ujobs           zset    jobs that have pending units (fair scheduling)
    {ns}:uleases         zset    "tid index" of running units by lease expiry
    {ns}:usplit          set     jobs that have units (swept when they end)

A claim runs ``CLAIM_UNIT`` first: it sweeps units of ended jobs, takes back
expired units, and picks the fairest pending unit, or answers 'job' when a job is
due first, which the store's own ``claim`` then takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from postcall.domain import Transcription, TranscriptionError
from postcall.errors import WorkerLost
from postcall.store import redis_lua as lua
from postcall.store import redis_units_lua as ulua
from postcall.store import redis_webhooks_lua as whlua
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


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _num(value: float) -> str:
    return repr(float(value))


class RedisUnitsMixin:
    """``UnitStore`` for ``RedisStore`` (which provides the client, clock and keys)."""

    _client: redis.Redis
    _clock: Callable[[], float]
    _ns: str
    _queued: str
    _leases: str
    _stream: str
    _seq: str
    _tr: Callable[..., str]
    _chunks: Callable[..., str]
    claim: Callable[..., Transcription | None]

    _wh_emit_keys: Callable[[], list[str]]  # the webhook outbox's (``RedisWebhooks``)
    _wh_emit_args: Callable[[], list[str]]

    def _init_units(self) -> None:
        reg = self._client.register_script
        prefix = lua.LIB + whlua.EMIT + ulua.ULIB  # a failed split job emits its event
        self._publish_units = reg(prefix + ulua.PUBLISH)
        self._claim_unit = reg(prefix + ulua.CLAIM_UNIT)
        self._heartbeat_unit = reg(prefix + ulua.HEARTBEAT_UNIT)
        self._complete_unit = reg(prefix + ulua.COMPLETE_UNIT)
        self._fail_unit = reg(prefix + ulua.FAIL_UNIT)
        self._release_unit = reg(prefix + ulua.RELEASE_UNIT)
        self._ujobs = f"{self._ns}:ujobs"
        self._uleases = f"{self._ns}:uleases"
        self._usplit = f"{self._ns}:usplit"

    def _units(self, transcription_id: str = "") -> str:
        return f"{self._ns}:units:{transcription_id}"

    def _upend(self, transcription_id: str = "") -> str:
        return f"{self._ns}:upend:{transcription_id}"

    def publish_units(
        self, transcription_id: str, worker_id: str, units: Sequence[UnitPlan]
    ) -> bool:
        if not units:
            raise ValueError("a job is published with at least one unit")
        tid = transcription_id
        keys = [
            self._tr(tid),
            self._units(tid),
            self._upend(tid),
            self._ujobs,
            self._usplit,
            self._leases,
            self._stream,
            self._seq,
        ]
        pairs = [part for u in units for part in (str(u.index), u.spec)]
        args = ["workers", worker_id, _num(self._clock()), tid, str(len(units)), *pairs]
        return bool(self._publish_units(keys, args))

    def claim_work(
        self, worker_id: str, *, lease_s: float, max_attempts: int
    ) -> Transcription | UnitClaim | None:
        consider_jobs = True
        for _ in range(3):  # a job seen due may be taken by another worker before ``claim``
            now = self._clock()
            out = self._claim_unit(
                [self._ujobs, self._uleases, self._usplit, self._queued, self._leases, self._seq],
                [
                    self._tr(),
                    self._units(),
                    self._upend(),
                    worker_id,
                    _num(now),
                    _num(now + lease_s),
                    str(max_attempts),
                    WorkerLost.code,
                    WORKER_LOST_MESSAGE,
                    "1" if consider_jobs else "0",
                    self._wh_emit_keys()[0],
                    *self._wh_emit_args(),
                ],
            )
            if out == "job":
                claimed = self.claim(worker_id, lease_s=lease_s, max_attempts=max_attempts)
                if claimed is not None:
                    return claimed
                consider_jobs = False
                continue
            if not out:
                return None
            _, tid, index, spec, attempts, job = out
            unit = Unit(
                tid, int(index), str(spec), UnitStatus.RUNNING, int(attempts), lease_owner=worker_id
            )
            return UnitClaim(unit, transcription_from_row(_pairs(job)))
        return None

    def heartbeat_unit(
        self, transcription_id: str, index: int, worker_id: str, *, lease_s: float
    ) -> bool:
        now = self._clock()
        keys = [self._tr(transcription_id), self._units(transcription_id), self._uleases]
        args = [str(index), worker_id, _num(now), _num(now + lease_s), transcription_id]
        return bool(self._heartbeat_unit(keys, args))

    def complete_unit(
        self,
        transcription_id: str,
        index: int,
        worker_id: str,
        payload: str,
        *,
        lease_s: float,
    ) -> UnitOutcome:
        tid = transcription_id
        now = self._clock()
        keys = [
            self._tr(tid),
            self._units(tid),
            self._uleases,
            self._chunks(tid),
            self._leases,
            self._seq,
        ]
        args = [
            str(index),
            worker_id,
            _num(now),
            _num(now + lease_s),
            tid,
            payload,
            _num(UNITS_PROGRESS),
        ]
        return UnitOutcome(self._complete_unit(keys, args))

    def fail_unit(
        self, transcription_id: str, index: int, worker_id: str, error: TranscriptionError
    ) -> bool:
        tid = transcription_id
        keys = [
            self._tr(tid),
            self._units(tid),
            self._upend(tid),
            self._ujobs,
            self._uleases,
            self._usplit,
            self._queued,
            self._leases,
        ]
        args = [str(index), worker_id, _num(self._clock()), tid, error.code, error.message]
        args += [self._wh_emit_keys()[0], *self._wh_emit_args()]
        return bool(self._fail_unit(keys, args))

    def release_unit(self, transcription_id: str, index: int, worker_id: str) -> bool:
        tid = transcription_id
        keys = [self._tr(tid), self._units(tid), self._upend(tid), self._ujobs, self._uleases]
        return bool(self._release_unit(keys, [str(index), worker_id, _num(self._clock()), tid]))

    def list_units(self, transcription_id: str) -> list[Unit]:
        status = self._client.hget(self._tr(transcription_id), "status")
        if status not in ("queued", "processing"):
            return []
        raw = cast(dict[str, str], self._client.hgetall(self._units(transcription_id)))
        indices = sorted(int(k[2:]) for k in raw if k.startswith("s:"))
        return [
            Unit(
                transcription_id,
                i,
                raw[f"s:{i}"],
                UnitStatus(raw[f"st:{i}"]),
                int(raw.get(f"a:{i}", "0")),
                lease_owner=raw.get(f"o:{i}"),
            )
            for i in indices
        ]
