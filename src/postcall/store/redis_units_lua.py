"""Lua scripts of the Redis store's chunk units (``postcall.store.redis_units``).

Each is prefixed with ``redis_lua.LIB`` and ``ULIB``. Keys and arguments are
documented at each call site.
"""

ULIB = """
local function unit_owned(tr, units, idx, worker, now)
  if redis.call('HGET', tr, 'status') ~= 'processing' then return false end
  local u = redis.call('HMGET', units, 'st:' .. idx, 'o:' .. idx, 'e:' .. idx)
  local expires = tonumber(u[3] or '')
  return u[1] == 'running' and u[2] == worker and expires ~= nil and expires >= now
end
local function drop_units(units, upend, ujobs, uleases, usplit, tid)
  local flat = redis.call('HGETALL', units)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 3) == 'st:' and flat[i + 1] == 'running' then
      redis.call('ZREM', uleases, tid .. ' ' .. string.sub(flat[i], 4))
    end
  end
  redis.call('DEL', units, upend)
  redis.call('ZREM', ujobs, tid)
  redis.call('SREM', usplit, tid)
end
-- Fail a split job (a unit's error, or worker_lost); its units go with it, and its
-- transcript.failed event goes to the webhook outbox (``emit`` comes before ULIB):
-- ``outbox``, ``evt_prefix`` and ``seed`` are the last three arguments of the scripts
-- that call this.
local function fail_split_job(tr, queued, leases, now_s, code, message, outbox, evt_prefix,
    seed)
  if redis.call('HGET', tr, 'status') ~= 'processing' then return end
  redis.call('HSET', tr, 'status', 'failed', 'updated_at', now_s, 'error_code', code,
    'error_message', message)
  redis.call('HDEL', tr, 'lease_owner', 'lease_expires', 'entry')
  local id = redis.call('HGET', tr, 'id')
  redis.call('ZREM', leases, id)
  redis.call('ZREM', queued, id)
  emit_transcript(outbox, evt_prefix .. 'evt_' .. redis.sha1hex(seed .. id):sub(1, 32), tr)
end
"""

# KEYS: tr, units, upend, ujobs, usplit, leases, stream, seq.
# ARGV: group, worker, now, transcription id, n, then n (index, spec) pairs.
PUBLISH = """
local h = hgetall(KEYS[1])
if not owned(h, ARGV[2], tonumber(ARGV[3])) then return 0 end
local planned = redis.call('HGET', KEYS[2], 'planned')
if not planned then
  local n = tonumber(ARGV[5])
  for i = 6, 5 + 2 * n, 2 do
    local idx = ARGV[i]
    redis.call('HSET', KEYS[2], 's:' .. idx, ARGV[i + 1], 'st:' .. idx, 'pending', 'a:' .. idx, 0)
    redis.call('ZADD', KEYS[3], idx, idx)
  end
  redis.call('HSET', KEYS[2], 'planned', n, 'done', 0, 'running', 0,
    'served', redis.call('INCR', KEYS[8]))
  redis.call('ZADD', KEYS[4], 0, ARGV[4])
  redis.call('SADD', KEYS[5], ARGV[4])
elseif tonumber(redis.call('HGET', KEYS[2], 'done')) >= tonumber(planned) then
  return 1  -- every unit is done: the job stays with its worker
end
-- Parked: still processing, but without a lease nobody claims or takes it over.
redis.call('HSET', KEYS[1], 'attempts', 0, 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires', 'entry')
redis.call('ZREM', KEYS[6], ARGV[4])
drop_pointer(KEYS[7], ARGV[1], h.entry, h.id)
forget_consumer(KEYS[7], ARGV[1], ARGV[2])
return 1
"""

# KEYS: ujobs, uleases, usplit, queued, leases, seq.
# ARGV: tr prefix, units prefix, upend prefix, worker, now, expires, max_attempts,
# worker_lost code, worker_lost message (with {attempts}), consider jobs ('1' or '0'),
# webhook outbox, event key prefix, event id seed.
# Returns {'unit', tid, index, spec, attempts, job hash flat}, 'job' (claim a job
# instead, with ``CLAIM``), or false.
CLAIM_UNIT = """
local ujobs, uleases, usplit, queued, leases, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5], KEYS[6]
local trp, unp, upp = ARGV[1], ARGV[2], ARGV[3]
local worker, now_s, expires = ARGV[4], ARGV[5], ARGV[6]
local now, max_attempts = tonumber(now_s), tonumber(ARGV[7])
local function drop(tid) drop_units(unp .. tid, upp .. tid, ujobs, uleases, usplit, tid) end

-- 1. Units of jobs that ended or were deleted.
for _, tid in ipairs(redis.call('SMEMBERS', usplit)) do
  local status = redis.call('HGET', trp .. tid, 'status')
  if status ~= 'processing' and status ~= 'queued' then drop(tid) end
end
-- 2. Expired units: back to pending, or their job fails with worker_lost.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', uleases, '-inf', '(' .. now_s)) do
  local tid, idx = string.match(member, '^(%S+) (%S+)$')
  local key = unp .. (tid or '')
  local u = redis.call('HMGET', key, 'st:' .. (idx or ''), 'e:' .. (idx or ''), 'a:' .. (idx or ''))
  local lease = tonumber(u[2] or '')
  if not tid or u[1] ~= 'running' or lease == nil then
    redis.call('ZREM', uleases, member)
  elseif lease >= now then
    redis.call('ZADD', uleases, u[2], member)
  elseif tonumber(u[3]) >= max_attempts then
    local message = string.gsub(ARGV[9], '{attempts}', u[3])
    fail_split_job(trp .. tid, queued, leases, now_s, ARGV[8], message, ARGV[11], ARGV[12],
      ARGV[13])
    drop(tid)
  else
    redis.call('HSET', key, 'st:' .. idx, 'pending')
    redis.call('HDEL', key, 'o:' .. idx, 'e:' .. idx)
    redis.call('HINCRBY', key, 'running', -1)
    redis.call('ZADD', upp .. tid, idx, idx)
    redis.call('ZADD', ujobs, 0, tid)
    redis.call('ZREM', uleases, member)
  end
end
-- 3. The transcription with the fewest units in flight, then served least recently.
while true do
  local best, best_running, best_served = nil, 0, 0
  for _, tid in ipairs(redis.call('ZRANGE', ujobs, 0, -1)) do
    local m = redis.call('HMGET', unp .. tid, 'running', 'served')
    if not m[1] or redis.call('ZCARD', upp .. tid) == 0 then
      redis.call('ZREM', ujobs, tid)
    else
      local r, s = tonumber(m[1]), tonumber(m[2])
      if best == nil or r < best_running or (r == best_running and s < best_served) then
        best, best_running, best_served = tid, r, s
      end
    end
  end
  -- 4. A job (queued, or taken over) comes first unless this transcription has nothing
  -- in flight and was last served before the oldest queued job arrived.
  if ARGV[10] == '1' then
    if #redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now_s, 'LIMIT', 0, 1) > 0 then
      return 'job'
    end
    local oldest = redis.call('ZRANGE', queued, 0, 0, 'WITHSCORES')
    if #oldest > 0 and (best == nil or best_running > 0
        or best_served > tonumber(oldest[2])) then
      return 'job'
    end
  end
  if best == nil then return false end
  local key = unp .. best
  local idx = redis.call('ZRANGE', upp .. best, 0, 0)[1]
  redis.call('ZREM', upp .. best, idx)
  if redis.call('ZCARD', upp .. best) == 0 then redis.call('ZREM', ujobs, best) end
  if redis.call('HGET', key, 'st:' .. idx) == 'pending' then
    redis.call('HSET', key, 'st:' .. idx, 'running', 'o:' .. idx, worker, 'e:' .. idx, expires,
      'served', redis.call('INCR', seqkey))
    local attempts = redis.call('HINCRBY', key, 'a:' .. idx, 1)
    redis.call('HINCRBY', key, 'running', 1)
    redis.call('ZADD', uleases, expires, best .. ' ' .. idx)
    return {'unit', best, idx, redis.call('HGET', key, 's:' .. idx), attempts,
      redis.call('HGETALL', trp .. best)}
  end
end
"""

# KEYS: tr, units, uleases. ARGV: index, worker, now, expires, transcription id.
HEARTBEAT_UNIT = """
if not unit_owned(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])) then return 0 end
redis.call('HSET', KEYS[2], 'e:' .. ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5] .. ' ' .. ARGV[1])
return 1
"""

# KEYS: tr, units, uleases, chunks, leases, seq.
# ARGV: index, worker, now, job lease expiry (if last), transcription id, payload,
# progress share of the units. Returns 'lost', 'done' or 'last'.
COMPLETE_UNIT = """
local idx, worker, now_s = ARGV[1], ARGV[2], ARGV[3]
if not unit_owned(KEYS[1], KEYS[2], idx, worker, tonumber(now_s)) then return 'lost' end
redis.call('HSET', KEYS[4], idx, ARGV[6])
redis.call('HSET', KEYS[2], 'st:' .. idx, 'done', 'served', redis.call('INCR', KEYS[6]))
redis.call('HDEL', KEYS[2], 'o:' .. idx, 'e:' .. idx)
redis.call('HINCRBY', KEYS[2], 'running', -1)
redis.call('ZREM', KEYS[3], ARGV[5] .. ' ' .. idx)
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
local planned = tonumber(redis.call('HGET', KEYS[2], 'planned'))
local progress = tonumber(ARGV[7]) * done / math.max(planned, 1)
local before = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0') or 0
redis.call('HSET', KEYS[1], 'progress', tostring(math.max(progress, before)), 'updated_at', now_s)
if done < planned then return 'done' end
redis.call('HSET', KEYS[1], 'lease_owner', worker, 'lease_expires', ARGV[4], 'attempts', 1)
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
return 'last'
"""

# KEYS: tr, units, upend, ujobs, uleases, usplit, queued, leases.
# ARGV: index, worker, now, transcription id, error code, error message, webhook outbox,
# event key prefix, event id seed.
FAIL_UNIT = """
if not unit_owned(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])) then return 0 end
fail_split_job(KEYS[1], KEYS[7], KEYS[8], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
drop_units(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[4])
return 1
"""

# KEYS: tr, units, upend, ujobs, uleases. ARGV: index, worker, now, transcription id.
RELEASE_UNIT = """
local idx = ARGV[1]
if not unit_owned(KEYS[1], KEYS[2], idx, ARGV[2], tonumber(ARGV[3])) then return 0 end
redis.call('HSET', KEYS[2], 'st:' .. idx, 'pending')
redis.call('HDEL', KEYS[2], 'o:' .. idx, 'e:' .. idx)
redis.call('HINCRBY', KEYS[2], 'running', -1)
local attempts = math.max(tonumber(redis.call('HGET', KEYS[2], 'a:' .. idx)) - 1, 0)
redis.call('HSET', KEYS[2], 'a:' .. idx, attempts)
redis.call('ZADD', KEYS[3], idx, idx)
redis.call('ZADD', KEYS[4], 0, ARGV[4])
redis.call('ZREM', KEYS[5], ARGV[4] .. ' ' .. idx)
return 1
"""
