"""Voiceprints on Redis (see ``postcall.store.voiceprints``): a mixin of ``RedisStore``.

Besides the store's own keys (``{tenant}`` escaped as there)::

    {ns}:vp:{tenant}:{id}    hash    a voiceprint (its fields, and ``slot``: its index field)
    {ns}:vps:{tenant}        zset    voiceprint ids by created_at (listing)
    {ns}:vpidx:{tenant}      hash    JSON [participant id, model] -> voiceprint id

Saving and deleting run as Lua scripts, so a voiceprint, its listing entry and its
index entry never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis

from postcall.domain import Voiceprint
from postcall.errors import NotFound
from postcall.store.voiceprints import voiceprint_fields, voiceprint_from_row

if TYPE_CHECKING:
    from postcall.store.base import Page

# KEYS: index, listing. ARGV: slot, new id, hash key prefix, created_at, then field pairs.
# The participant's voiceprint of that model keeps its id and created_at. Returns the hash.
_PUT = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  id = ARGV[2]
  redis.call('HSET', KEYS[1], ARGV[1], id)
  redis.call('ZADD', KEYS[2], ARGV[4], id)
end
local key = ARGV[3] .. id
local created = redis.call('HGET', key, 'created_at') or ARGV[4]
redis.call('DEL', key)
redis.call('HSET', key, unpack(ARGV, 5))
redis.call('HSET', key, 'id', id, 'created_at', created, 'slot', ARGV[1])
return redis.call('HGETALL', key)
"""

# KEYS: the voiceprint, index, listing. ARGV: id. Returns the hash, or false when absent.
_DELETE = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return false end
local slot = redis.call('HGET', KEYS[1], 'slot')
if slot then redis.call('HDEL', KEYS[2], slot) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1])
return flat
"""

# KEYS: index, listing. ARGV: participant id, hash key prefix. Returns how many went.
_DELETE_PARTICIPANT = """
local flat = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #flat, 2 do
  local ok, slot = pcall(cjson.decode, flat[i])
  if ok and type(slot) == 'table' and slot[1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], flat[i])
    redis.call('ZREM', KEYS[2], flat[i + 1])
    redis.call('DEL', ARGV[2] .. flat[i + 1])
    n = n + 1
  end
end
return n
"""


def _esc(tenant: str) -> str:
    """A tenant as a key part that no other tenant's can forge (as ``RedisStore`` does)."""
    return tenant.replace("%", "%25").replace(":", "%3A")


def _slot(participant_id: str, model: str) -> str:
    return json.dumps([participant_id, model])


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisVoiceprintsMixin:
    """``VoiceprintStore`` for ``RedisStore`` (which provides the client and keys)."""

    _client: redis.Redis
    _ns: str
    _page: Callable[[str, int, str | None], tuple[list[str], str | None]]
    _hashes: Callable[[list[str]], list[dict[str, Any]]]

    def _init_voiceprints(self) -> None:
        reg = self._client.register_script
        self._vp_put = reg(_PUT)
        self._vp_delete = reg(_DELETE)
        self._vp_delete_participant = reg(_DELETE_PARTICIPANT)

    def _vp_prefix(self, tenant: str) -> str:
        return f"{self._ns}:vp:{_esc(tenant)}:"

    def _vps(self, tenant: str) -> str:
        return f"{self._ns}:vps:{_esc(tenant)}"

    def _vpidx(self, tenant: str) -> str:
        return f"{self._ns}:vpidx:{_esc(tenant)}"

    def put_voiceprint(self, voiceprint: Voiceprint) -> Voiceprint:
        v = voiceprint
        fields = voiceprint_fields(v)
        created = fields.pop("created_at")
        flat = [part for pair in fields.items() for part in pair]
        out = self._vp_put(
            [self._vpidx(v.tenant), self._vps(v.tenant)],
            [_slot(v.participant_id, v.model), v.id, self._vp_prefix(v.tenant), created, *flat],
        )
        return voiceprint_from_row(_pairs(out))

    def get_voiceprint(self, tenant: str, voiceprint_id: str) -> Voiceprint:
        row = cast(dict[str, str], self._client.hgetall(self._vp_prefix(tenant) + voiceprint_id))
        if not row:
            raise NotFound(f"voiceprint {voiceprint_id!r} not found")
        return voiceprint_from_row(row)

    def find_voiceprint(self, tenant: str, participant_id: str, model: str) -> Voiceprint | None:
        found = self._client.hget(self._vpidx(tenant), _slot(participant_id, model))
        if found is None:
            return None
        rows = self._hashes([self._vp_prefix(tenant) + str(found)])
        return voiceprint_from_row(rows[0]) if rows else None

    def _voiceprint_ids(self, tenant: str, keep: Callable[[str, str], bool]) -> list[str]:
        index = cast(dict[str, str], self._client.hgetall(self._vpidx(tenant)))
        ids = []
        for slot, vp_id in index.items():
            participant_id, model = json.loads(slot)
            if keep(participant_id, model):
                ids.append(vp_id)
        return ids

    def list_voiceprints(
        self, tenant: str, *, limit: int, cursor: str | None, participant_id: str | None = None
    ) -> Page[Voiceprint]:
        from postcall.store.base import Page

        prefix = self._vp_prefix(tenant)
        if participant_id is not None:  # one participant: a print per model, one page
            ids = self._voiceprint_ids(tenant, lambda p, _m: p == participant_id)
            prints = [voiceprint_from_row(r) for r in self._hashes([prefix + i for i in ids])]
            prints.sort(key=lambda v: (v.created_at, v.id), reverse=True)
            return Page(prints, None)
        ids, nxt = self._page(self._vps(tenant), limit, cursor)
        return Page([voiceprint_from_row(r) for r in self._hashes([prefix + i for i in ids])], nxt)

    def voiceprints_of_model(self, tenant: str, model: str) -> list[Voiceprint]:
        ids = self._voiceprint_ids(tenant, lambda _p, m: m == model)
        prefix = self._vp_prefix(tenant)
        prints = [voiceprint_from_row(r) for r in self._hashes([prefix + i for i in ids])]
        return sorted(prints, key=lambda v: (v.created_at, v.id))

    def delete_voiceprint(self, tenant: str, voiceprint_id: str) -> Voiceprint:
        keys = [self._vp_prefix(tenant) + voiceprint_id, self._vpidx(tenant), self._vps(tenant)]
        out = self._vp_delete(keys, [voiceprint_id])
        if not out:
            raise NotFound(f"voiceprint {voiceprint_id!r} not found")
        return voiceprint_from_row(_pairs(out))

    def delete_participant_voiceprints(self, tenant: str, participant_id: str) -> int:
        keys = [self._vpidx(tenant), self._vps(tenant)]
        return int(self._vp_delete_participant(keys, [participant_id, self._vp_prefix(tenant)]))
