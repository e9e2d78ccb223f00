"""Redis webhooks: endpoints, the event outbox and deliveries (mixed into ``RedisStore``).

Key layout (``ns`` as in ``postcall.store.redis``)::

    {ns}:wh:ep:{id}          hash    an endpoint (its tenant is checked on every access)
    {ns}:wh:eps:{tenant}     zset    a tenant's endpoint ids by created_at
    {ns}:wh:evt:{id}         hash    an event (outbox entry)
    {ns}:wh:pending          zset    events not fanned out yet, by {ns}:wh:pending:seq
    {ns}:wh:dl:{id}          hash    a delivery (payload, status, attempts, lease owner)
    {ns}:wh:due              zset    pending delivery ids by next attempt (= lease end
                                     while claimed)
    {ns}:wh:log:{id}         list    a delivery's attempts (JSON)
    {ns}:wh:epdl:{endpoint}  zset    an endpoint's delivery ids by seq (listing)
    {ns}:wh:evdl:{event}     zset    an event's delivery ids by seq (listing)
    {ns}:wh:seq              string  delivery sequence
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import redis

from postcall.errors import Conflict, NotFound
from postcall.sealing import SecretBox
from postcall.store import redis_lua as lua
from postcall.store import redis_webhooks_lua as whlua
from postcall.store.base import Page
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
from postcall.webhooks import Attempt, Delivery, DeliveryStatus, Endpoint, Event


def _num(value: float) -> str:
    return repr(float(value))


def _esc(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


class RedisWebhooks:
    """The ``WebhookStore`` port for ``RedisStore`` (which provides client and clock)."""

    _client: redis.Redis
    _ns: str
    _clock: Callable[[], float]

    _box: SecretBox | None = None

    def seal_secrets_with(self, box: SecretBox | None) -> None:
        self._box = box

    def _init_webhooks(self) -> None:
        reg = self._client.register_script
        self._wh_fan_out = reg(lua.LIB + whlua.FAN_OUT)
        self._wh_claim = reg(lua.LIB + whlua.CLAIM_DELIVERY)
        self._wh_finish = reg(lua.LIB + whlua.FINISH_ATTEMPT)
        self._wh_resend = reg(lua.LIB + whlua.RESEND)
        self._wh_postpone = reg(lua.LIB + whlua.POSTPONE)
        self._wh_endpoint = reg(whlua.ENDPOINT)

    # --- keys ----------------------------------------------------------------------
    def _wh(self, *parts: str) -> str:
        return ":".join((self._ns, "wh", *parts))

    @property
    def _wh_pending(self) -> str:
        return self._wh("pending")

    def _wh_emit_keys(self) -> list[str]:
        """The outbox and a new event's key, for scripts that may emit one event."""
        return [self._wh_pending, self._wh("evt", new_event_id())]

    def _wh_emit_args(self) -> list[str]:
        """Event key prefix and a random seed, for scripts that make event ids in Lua."""
        return [self._wh("evt", ""), secrets.token_hex(16)]

    # --- the outbox --------------------------------------------------------------------
    def pending_events(self, limit: int) -> list[Event]:
        ids = cast(list[str], self._client.zrange(self._wh_pending, 0, limit - 1))
        rows = [self._hash(self._wh("evt", i)) for i in ids]
        return [event_from_row(r) for r in rows if r]

    def fan_out(self, event_id: str, payload: str, endpoint_ids: Sequence[str]) -> bool:
        pairs = [part for ep in endpoint_ids for part in (new_delivery_id(), ep)]
        keys = [self._wh("evt", event_id), self._wh_pending, self._wh("due")]
        args = [
            event_id,
            payload,
            _num(self._clock()),
            self._wh("dl", ""),
            self._wh("epdl", ""),
            self._wh("evdl", event_id),
            self._wh("seq"),
            *pairs,
        ]
        return bool(self._wh_fan_out(keys, args))

    # --- endpoints ------------------------------------------------------------------
    def _endpoint_op(self, tenant: str, endpoint_id: str, mode: str, *fields: str) -> bool:
        keys = [self._wh("ep", endpoint_id), self._wh("eps", _esc(tenant))]
        created = fields[fields.index("created_at") + 1] if fields else "0"
        return bool(self._wh_endpoint(keys, [tenant, mode, created, *fields]))

    def add_endpoint(self, endpoint: Endpoint) -> None:
        flat = [p for kv in endpoint_fields(endpoint, self._box).items() for p in kv]
        if not self._endpoint_op(endpoint.tenant, endpoint.id, "add", *flat):
            raise Conflict(f"webhook endpoint {endpoint.id!r} already exists")

    def get_endpoint(self, tenant: str, endpoint_id: str) -> Endpoint:
        row = self._hash(self._wh("ep", endpoint_id))
        if row.get("tenant") != tenant:
            raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
        return endpoint_from_row(row, self._box)

    def list_endpoints(self, tenant: str) -> list[Endpoint]:
        ids = cast(list[str], self._client.zrange(self._wh("eps", _esc(tenant)), 0, -1))
        rows = [self._hash(self._wh("ep", i)) for i in ids]
        return [endpoint_from_row(r, self._box) for r in rows if r.get("tenant") == tenant]

    def save_endpoint(self, endpoint: Endpoint) -> None:
        flat = [p for kv in endpoint_fields(endpoint, self._box).items() for p in kv]
        if not self._endpoint_op(endpoint.tenant, endpoint.id, "save", *flat):
            raise NotFound(f"webhook endpoint {endpoint.id!r} not found")

    def delete_endpoint(self, tenant: str, endpoint_id: str) -> None:
        if not self._endpoint_op(tenant, endpoint_id, "delete"):
            raise NotFound(f"webhook endpoint {endpoint_id!r} not found")

    # --- deliveries ------------------------------------------------------------------
    def claim_delivery(self, owner: str, *, lease_s: float, max_attempts: int) -> Delivery | None:
        now = self._clock()
        flat = self._wh_claim(
            [self._wh("due")],
            [
                self._wh("dl", ""),
                self._wh("log", ""),
                owner,
                _num(now),
                _num(now + lease_s),
                str(max_attempts),
                GIVEN_UP,
            ],
        )
        if not flat:
            return None
        row = {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        return self._delivery(row)

    def finish_attempt(
        self, delivery_id: str, owner: str, attempt: Attempt, *, retry_at: datetime | None
    ) -> bool:
        if attempt.succeeded:
            status = DeliveryStatus.SUCCEEDED
        else:
            status = DeliveryStatus.PENDING if retry_at else DeliveryStatus.FAILED
        nxt = _num(retry_at.timestamp()) if status is DeliveryStatus.PENDING and retry_at else ""
        keys = [self._wh("dl", delivery_id), self._wh("due"), self._wh("log", delivery_id)]
        args = [owner, attempt_to_json(attempt), status.value, nxt, _num(self._clock())]
        return bool(self._wh_finish(keys, args))

    def postpone_delivery(self, delivery_id: str, owner: str, *, until: datetime) -> bool:
        keys = [self._wh("dl", delivery_id), self._wh("due")]
        args = [owner, _num(until.timestamp()), _num(self._clock())]
        return bool(self._wh_postpone(keys, args))

    def _delivery(self, row: dict[str, Any]) -> Delivery:
        log = cast(list[str], self._client.lrange(self._wh("log", str(row["id"])), 0, -1))
        return delivery_from_row(row, log)

    def get_delivery(self, tenant: str, delivery_id: str) -> Delivery:
        row = self._hash(self._wh("dl", delivery_id))
        if row.get("tenant") != tenant:
            raise NotFound(f"webhook delivery {delivery_id!r} not found")
        return self._delivery(row)

    def list_deliveries(
        self,
        tenant: str,
        *,
        endpoint_id: str | None = None,
        event_id: str | None = None,
        limit: int,
        cursor: str | None,
    ) -> Page[Delivery]:
        if endpoint_id is not None:
            index = self._wh("epdl", endpoint_id)
        elif event_id is not None:
            index = self._wh("evdl", event_id)
        else:
            raise ValueError("list_deliveries needs an endpoint_id or an event_id")
        after = decode_seq_cursor(cursor)
        top = "+inf" if after is None else f"({after}"
        found = cast(
            list[tuple[str, float]],
            self._client.zrevrangebyscore(index, top, "-inf", 0, limit + 1, withscores=True),
        )
        items = []
        for did, _ in found[:limit]:
            row = self._hash(self._wh("dl", did))
            if row.get("tenant") == tenant and (
                event_id is None or row.get("event_id") == event_id
            ):
                items.append(self._delivery(row))
        nxt = str(int(found[limit - 1][1])) if len(found) > limit else None
        return Page(items, nxt)

    def resend(self, tenant: str, delivery_id: str) -> Delivery:
        keys = [self._wh("dl", delivery_id), self._wh("due")]
        if not self._wh_resend(keys, [tenant, _num(self._clock())]):
            raise NotFound(f"webhook delivery {delivery_id!r} not found")
        return self.get_delivery(tenant, delivery_id)

    def _hash(self, key: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._client.hgetall(key))
