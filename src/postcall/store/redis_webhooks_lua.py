"""Lua for the Redis webhook outbox and deliveries (keys at the call sites in
``postcall.store.redis_webhooks``).

``EMIT`` goes after ``redis_lua.LIB`` in the scripts whose change causes an event
(adding a recording, ending a transcription, giving a job up as ``worker_lost``), so
the event is written by the same script, atomically.
"""

# An event's id is the last part of its key. ``at`` is a decimal timestamp string. The
# outbox is ordered by a sequence kept beside it (``{pending}:seq``).
EMIT = """
local function emit(pending, key, tenant, etype, rec, tr, code, sub, at)
  local id = string.match(key, '[^:]+$')
  redis.call('HSET', key, 'id', id, 'tenant', tenant, 'type', etype, 'recording_id', rec,
    'transcription_id', tr, 'code', code, 'sub_code', sub, 'updated_at', at, 'created_at', at)
  redis.call('ZADD', pending, redis.call('INCR', pending .. ':seq'), id)
end
local function emit_recording(pending, key, reckey, rec, at)
  emit(pending, key, redis.call('HGET', reckey, 'tenant'), 'recording.done', rec, '', 'done',
    '', at)
end
local function emit_transcript(pending, key, trkey)
  local t = hgetall(trkey)
  if t.status == 'completed' then
    emit(pending, key, t.tenant, 'transcript.done', t.recording_id, t.id, 'done', '',
      t.updated_at)
  else
    emit(pending, key, t.tenant, 'transcript.failed', t.recording_id, t.id, 'failed',
      t.error_code or '', t.updated_at)
  end
end
"""

# KEYS: event, pending, due. ARGV: event id, payload, now, delivery prefix,
# per-endpoint index prefix, per-event index, seq, then (delivery id, endpoint id)...
FAN_OUT = """
local h = hgetall(KEYS[1])
if not h.id or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 8, #ARGV, 2 do
  local did, ep = ARGV[i], ARGV[i + 1]
  local seq = redis.call('INCR', ARGV[7])
  redis.call('HSET', ARGV[4] .. did, 'id', did, 'tenant', h.tenant, 'event_id', h.id,
    'endpoint_id', ep, 'event_type', h.type, 'payload', ARGV[2], 'status', 'pending',
    'attempts', 0, 'next_attempt_at', ARGV[3], 'created_at', ARGV[3], 'updated_at', ARGV[3],
    'seq', seq, 'lease_owner', '')
  redis.call('ZADD', KEYS[3], ARGV[3], did)
  redis.call('ZADD', ARGV[5] .. ep, seq, did)
  redis.call('ZADD', ARGV[6], seq, did)
end
return 1
"""

# KEYS: due. ARGV: delivery prefix, log prefix, owner, now, lease end, max attempts,
# given-up message. Returns the claimed delivery's hash, or false.
CLAIM_DELIVERY = """
while true do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, 1)
  if #due == 0 then return false end
  local id = due[1]
  local key = ARGV[1] .. id
  local h = hgetall(key)
  if h.status ~= 'pending' then
    redis.call('ZREM', KEYS[1], id)  -- stale index entry: the hash is the truth
  elseif tonumber(h.attempts) >= tonumber(ARGV[6]) then
    local log = ARGV[2] .. id
    redis.call('RPUSH', log, cjson.encode({number = redis.call('LLEN', log) + 1,
      at = tonumber(ARGV[4]), succeeded = false, response_code = cjson.null, latency_ms = 0,
      error = ARGV[7]}))
    redis.call('HSET', key, 'status', 'failed', 'next_attempt_at', '', 'lease_owner', '',
      'updated_at', ARGV[4])
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'lease_owner', ARGV[3], 'next_attempt_at', ARGV[5],
      'updated_at', ARGV[4])
    redis.call('ZADD', KEYS[1], ARGV[5], id)
    return redis.call('HGETALL', key)
  end
end
"""

# KEYS: delivery, due, log. ARGV: owner, attempt JSON, new status, retry at ('' = none), now.
FINISH_ATTEMPT = """
local h = hgetall(KEYS[1])
if h.status ~= 'pending' or h.lease_owner ~= ARGV[1] then return 0 end
local a = cjson.decode(ARGV[2])
a.number = redis.call('LLEN', KEYS[3]) + 1
redis.call('RPUSH', KEYS[3], cjson.encode(a))
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'next_attempt_at', ARGV[4], 'lease_owner', '',
  'updated_at', ARGV[5])
if ARGV[3] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[4], h.id)
else
  redis.call('ZREM', KEYS[2], h.id)
end
return 1
"""

# KEYS: delivery, due. ARGV: owner, due at, now.
POSTPONE = """
local h = hgetall(KEYS[1])
if h.status ~= 'pending' or h.lease_owner ~= ARGV[1] then return 0 end
local attempts = math.max(tonumber(h.attempts) - 1, 0)
redis.call('HSET', KEYS[1], 'attempts', attempts, 'next_attempt_at', ARGV[2], 'lease_owner', '',
  'updated_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], h.id)
return 1
"""

# KEYS: delivery, due. ARGV: tenant, now.
RESEND = """
local h = hgetall(KEYS[1])
if h.tenant ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', 0, 'next_attempt_at', ARGV[2],
  'lease_owner', '', 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], h.id)
return 1
"""

# KEYS: endpoint, tenant's index. ARGV: tenant, mode ('add' | 'save' | 'delete'),
# created_at, field/value pairs...
ENDPOINT = """
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if ARGV[2] == 'add' then
  if tenant then return 0 end
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  redis.call('ZADD', KEYS[2], ARGV[3], string.match(KEYS[1], '[^:]+$'))
  return 1
end
if tenant ~= ARGV[1] then return 0 end
if ARGV[2] == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], string.match(KEYS[1], '[^:]+$'))
else
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
end
return 1
"""


# An event done with (fanned out, no delivery pending) and created before ARGV[1]: delete
# it with its deliveries and their attempt logs. KEYS: event, pending, the event's
# deliveries, due. ARGV: created before, event id, delivery, log and endpoint-listing
# key prefixes.
PRUNE_EVENT = """
local created = tonumber(redis.call('HGET', KEYS[1], 'created_at'))
if not created or created >= tonumber(ARGV[1]) then return 0 end
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
local dls = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, d in ipairs(dls) do
  if redis.call('HGET', ARGV[3] .. d, 'status') == 'pending' then return 0 end
end
for _, d in ipairs(dls) do
  local ep = redis.call('HGET', ARGV[3] .. d, 'endpoint_id')
  if ep then redis.call('ZREM', ARGV[5] .. ep, d) end
  redis.call('ZREM', KEYS[4], d)
  redis.call('DEL', ARGV[3] .. d, ARGV[4] .. d)
end
redis.call('DEL', KEYS[1], KEYS[3])
return 1
"""
