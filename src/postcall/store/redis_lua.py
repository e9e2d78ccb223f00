"""The Lua scripts of the Redis store: every change that must be atomic runs as one.

Keys and arguments are documented at each call site in ``postcall.store.redis``.
"""

LIB = """
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
-- Ack and delete a job's stream pointer. Given the job's id, a pointer whose entry now
-- names another job is left alone: an id kept from a lost stream can be that of a live
-- entry of the new one (both made in the same millisecond).
local function drop_pointer(stream, group, entry, id)
  if not entry then return end
  if id then
    local r = redis.pcall('XRANGE', stream, entry, entry)
    if type(r) == 'table' and not r.err and #r > 0 then
      local fields = r[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'id' and fields[i + 1] ~= id then return end
      end
    end
  end
  redis.pcall('XACK', stream, group, entry)
  redis.pcall('XDEL', stream, entry)
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

# KEYS: rec, recs index, outbox, new event. ARGV: id, created_at, field/value pairs...
ADD_RECORDING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
emit_recording(KEYS[3], KEYS[4], KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: rec, tr, trs index, rectrs index, queued, seq, stream.
# ARGV: id, created_at, status, limit ('' for none), field/value pairs...
ADD_TRANSCRIPTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'no_recording' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'exists' end
if ARGV[4] ~= '' and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then return 'limit' end
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[2], 'seq', seq, unpack(ARGV, 5))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
if ARGV[3] == 'queued' then enqueue(KEYS[2], KEYS[5], KEYS[7], {id = ARGV[1], seq = seq}) end
return 'ok'
"""

# KEYS: tr, trs index, chunks, queued, leases, stream. ARGV: tenant, rectrs prefix, group.
DELETE_TRANSCRIPTION = """
local h, flat = hgetall(KEYS[1])
if h.tenant ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], h.id)
redis.call('ZREM', ARGV[2] .. h.recording_id, h.id)
redis.call('ZREM', KEYS[4], h.id)
redis.call('ZREM', KEYS[5], h.id)
drop_pointer(KEYS[6], ARGV[3], h.entry, h.id)
forget_consumer(KEYS[6], ARGV[3], h.lease_owner)
return flat
"""

# KEYS: rec, recs index, trs index, rectrs index, queued, leases, stream.
# ARGV: recording id, tr prefix, chunks prefix, group.
DELETE_RECORDING = """
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
    drop_pointer(KEYS[7], ARGV[4], h.entry, h.id)
    forget_consumer(KEYS[7], ARGV[4], h.lease_owner)
    table.insert(out, flat)
  end
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return out
"""

# KEYS: leases, queued, stream, outbox. ARGV: tr prefix, group, worker, now, expires,
# max_attempts, worker_lost code, event key prefix, event id seed.
# Returns the claimed job's hash, or false.
CLAIM = """
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
    emit_transcript(KEYS[4], ARGV[8] .. 'evt_' .. redis.sha1hex(ARGV[9] .. id):sub(1, 32), key)
    drop_pointer(stream, group, h.entry, h.id)
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
      if h.entry ~= entry then drop_pointer(stream, group, h.entry, h.id) end
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
      drop_pointer(stream, group, h.entry, h.id)
      enqueue(key, queued, stream, h)
      repointed = true
    end
  end
end
forget_consumer(stream, group, worker)
return false
"""

# KEYS: tr, leases, stream. ARGV: group, worker, now, expires, progress.
HEARTBEAT = """
local h = hgetall(KEYS[1])
if not owned(h, ARGV[2], tonumber(ARGV[3])) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[5], 'lease_expires', ARGV[4], 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], h.id)
if h.entry then redis.pcall('XCLAIM', KEYS[3], ARGV[1], ARGV[2], 0, h.entry, 'JUSTID') end
return 1
"""

# KEYS: tr, leases, stream, chunks, queued, outbox, new event.
# ARGV: group, worker, now, outcome, field/values...
# outcome: 'completed' (drops kept chunks), 'failed', or 'queued' (a release).
FINISH = """
local h = hgetall(KEYS[1])
if not owned(h, ARGV[2], tonumber(ARGV[3])) then return 0 end
local outcome = ARGV[4]
redis.call('HSET', KEYS[1], 'status', outcome, 'updated_at', ARGV[3], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_expires', 'entry')
redis.call('ZREM', KEYS[2], h.id)
drop_pointer(KEYS[3], ARGV[1], h.entry, h.id)
forget_consumer(KEYS[3], ARGV[1], ARGV[2])
if outcome == 'completed' then redis.call('DEL', KEYS[4]) end
if outcome ~= 'queued' then emit_transcript(KEYS[6], KEYS[7], KEYS[1]) end
if outcome == 'queued' then
  local attempts = math.max(tonumber(h.attempts) - 1, 0)
  redis.call('HSET', KEYS[1], 'attempts', attempts)
  enqueue(KEYS[1], KEYS[5], KEYS[3], h)
end
return 1
"""

# KEYS: queued, stream. ARGV: tr prefix, group, seq to start after, batch size.
# Returns {re-pointed, last seq seen, ids seen}.
RECONCILE = """
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
    drop_pointer(stream, group, h.entry, h.id)
    enqueue(key, queued, stream, h)
    restored = restored + 1
  end
end
return {restored, last, #rows / 2}
"""
