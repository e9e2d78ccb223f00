"""Redis side of ``IdempotencyStore``: a mixin of ``RedisStore``.

Keys (``{tenant}`` escaped as in ``postcall.store.redis``)::

    {ns}:idem:{tenant}:{key}      hash    fingerprint, expires_at; once answered also
                                          status, body, content_type
    {ns}:secret:{name}            string  a server secret

Expiry is decided by ``expires_at`` from the store's clock (like leases); a Redis TTL
of the same length only collects the hash afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import redis

from postcall.store.idempotency import IdempotencyEntry, StoredResponse

# KEYS: idem. ARGV: fingerprint, now, expires_at, ttl ms. The existing hash, or false.
RESERVE = """
local flat = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
if h.fingerprint and tonumber(h.expires_at) > tonumber(ARGV[2]) then return flat end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return false
"""

# KEYS: idem. ARGV: fingerprint, status, body, content_type, expires_at, ttl ms.
COMPLETE = """
if redis.call('HGET', KEYS[1], 'fingerprint') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'status') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'body', ARGV[3], 'content_type', ARGV[4],
  'expires_at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS: idem. ARGV: fingerprint.
RELEASE = """
if redis.call('HGET', KEYS[1], 'fingerprint') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'status') == 1 then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _ms(seconds: float) -> str:
    return str(max(1, math.ceil(seconds * 1000)))


class RedisIdempotency:
    """Idempotency keys (one hash per tenant and key) and server secrets."""

    _client: redis.Redis
    _clock: Callable[[], float]
    _ns: str

    def _init_idempotency(self) -> None:
        reg = self._client.register_script
        self._idem_reserve = reg(RESERVE)
        self._idem_complete = reg(COMPLETE)
        self._idem_release = reg(RELEASE)

    def _idem(self, tenant: str, key: str) -> str:
        safe = tenant.replace("%", "%25").replace(":", "%3A")
        return f"{self._ns}:idem:{safe}:{key}"

    def idempotency_reserve(
        self, tenant: str, key: str, fingerprint: str, *, lock_s: float
    ) -> IdempotencyEntry | None:
        now = self._clock()
        args = [fingerprint, repr(now), repr(now + lock_s), _ms(lock_s)]
        flat = cast(list[Any] | None, self._idem_reserve([self._idem(tenant, key)], args))
        if not flat:
            return None
        h = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
        response = None
        if "status" in h:
            response = StoredResponse(int(h["status"]), h["body"], h["content_type"])
        return IdempotencyEntry(h["fingerprint"], response)

    def idempotency_complete(
        self, tenant: str, key: str, fingerprint: str, response: StoredResponse, *, ttl_s: float
    ) -> None:
        args = [
            fingerprint,
            str(response.status),
            response.body,
            response.content_type,
            repr(self._clock() + ttl_s),
            _ms(ttl_s),
        ]
        self._idem_complete([self._idem(tenant, key)], args)

    def idempotency_release(self, tenant: str, key: str, fingerprint: str) -> None:
        self._idem_release([self._idem(tenant, key)], [fingerprint])

    def server_secret(self, name: str, candidate: str) -> str:
        key = f"{self._ns}:secret:{name}"
        self._client.set(key, candidate, nx=True)  # once set, never changed: no race after
        return str(self._client.get(key))
