"""The job record's state changes as Redis scripts: each reads and writes one record atomically, so a
cancel, a finishing worker, a reaper and a stale delivery can never both win.

Fencing: every delivery of a job carries the attempt number it was published with, and every script
that a worker runs compares it with the record's `attempt`; a stale delivery (a zombie worker, the
broker's backstop redelivery of an attempt the reaper already replaced) changes nothing.

Some scripts also touch keys named after the record's owner (`stockq:jobs:<owner>`, the in-flight set):
they assume one Redis server, not a cluster.
"""

# KEYS[1] job hash, KEYS[2] its done-list, KEYS[3] lease index; ARGV[1] allowed from-states (comma
# list), ARGV[2] new state, ARGV[3] json of extra fields, ARGV[4] '1' when final, ARGV[5] the caller's
# attempt ('' = not a delivery: the API, a single-flight holder finishing its waiters), ARGV[6] outcome
# to append to `attempts` ('' = none), ARGV[7] now, ARGV[8] json list of counter increments made only when
# the transition applies ([hash, field, amount, 'float' or ''], workers/counters.py), so a retried call
# whose first reply was lost counts nothing twice.
TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[5] then return 'stale' end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return status end
if ARGV[6] ~= '' and status == 'running' then
  local log = cjson.decode(redis.call('HGET', KEYS[1], 'attempts') or '[]')
  table.insert(log, {attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt')),
    worker = redis.call('HGET', KEYS[1], 'worker') or '',
    started_at = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0'),
    ended_at = tonumber(ARGV[7]), outcome = ARGV[6]})
  redis.call('HSET', KEYS[1], 'attempts', cjson.encode(log))
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
local extra = cjson.decode(ARGV[3])
for k, v in pairs(extra) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[2] ~= 'running' then redis.call('ZREM', KEYS[3], string.sub(KEYS[1], 12)) end
redis.call('ZREM', 'stockq:queued', string.sub(KEYS[1], 12))
if ARGV[4] == '1' then
  local owner = redis.call('HGET', KEYS[1], 'owner') or ''
  redis.call('SREM', 'stockq:inflight:' .. owner, string.sub(KEYS[1], 12))
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('EXPIRE', KEYS[2], 120)
end
for _, c in ipairs(cjson.decode(ARGV[8] or '[]')) do
  if c[4] == 'float' then redis.call('HINCRBYFLOAT', c[1], c[2], c[3])
  else redis.call('HINCRBY', c[1], c[2], c[3]) end
end
return 'OK'
"""

# KEYS[1] job hash, KEYS[2] lease index; ARGV[1] delivered attempt, ARGV[2] worker, ARGV[3] now,
# ARGV[4] lease seconds. Only a queued job whose attempt is the delivered one starts: {'OK', owner};
# else why not ('stale', 'missing' or the status).
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 'stale' end
if status ~= 'queued' then return status end
local expires = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3], 'worker', ARGV[2],
  'lease_expires_at', expires, 'stage', '')
redis.call('ZADD', KEYS[2], expires, string.sub(KEYS[1], 12))
redis.call('ZREM', 'stockq:queued', string.sub(KEYS[1], 12))
return {'OK', redis.call('HGET', KEYS[1], 'owner') or ''}
"""

# KEYS[1] job hash, KEYS[2] lease index; ARGV[1] attempt, ARGV[2] now, ARGV[3] lease seconds.
RENEW = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local expires = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_expires_at', expires)
redis.call('ZADD', KEYS[2], expires, string.sub(KEYS[1], 12))
return 1
"""

# KEYS[1] job hash; ARGV[1] attempt ('' = any), then field, value pairs. Progress lands only on the
# running attempt: never on a finished job, nor on an expired one (which would come back hollow).
SET_IF_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# A stage boundary of the running attempt. KEYS[1] job hash; ARGV[1] attempt, ARGV[2] stage. Returns 2
# when a cancel was requested (the job stops here, whichever attempt asks), else 1 when the stage was set
# or 0 when this attempt no longer runs the job.
STAGE = """
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 2 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'stage', ARGV[2])
return 1
"""

# The work of a delivery has run: count the execution (how double runs are found) and answer whether a
# cancel was requested meanwhile. KEYS[1] job hash. Returns 1 (cancel requested), 0, or false (no job).
EXECUTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], 'executions', 1)
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 1 end
return 0
"""

# A running attempt given up: its worker died (the lease expired, or its pool process was lost) or it
# handed itself on (preemption, a hand-off to another task). KEYS[1] job hash, KEYS[2] done-list,
# KEYS[3] lease index, KEYS[4] dead-letter index; ARGV[1] attempt, ARGV[2] now, ARGV[3] outcome,
# ARGV[4] '1' when the loss counts against the job (a lost worker), ARGV[5] max losses, ARGV[6] stage
# to show while queued again, ARGV[7] json of fields to set when requeued (the next task, say),
# ARGV[8] '1' to require an expired lease (the reaper). Returns the new attempt, 'failed' (dead-
# lettered) or false.
REQUEUE = """
local id = string.sub(KEYS[1], 12)
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or
   redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then
  redis.call('ZREM', KEYS[3], id)
  return false
end
local now = tonumber(ARGV[2])
if ARGV[8] == '1' and tonumber(redis.call('HGET', KEYS[1], 'lease_expires_at') or '0') > now then
  return false
end
local log = cjson.decode(redis.call('HGET', KEYS[1], 'attempts') or '[]')
table.insert(log, {attempt = tonumber(ARGV[1]), worker = redis.call('HGET', KEYS[1], 'worker') or '',
  started_at = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0'), ended_at = now,
  outcome = ARGV[3]})
redis.call('HSET', KEYS[1], 'attempts', cjson.encode(log))
redis.call('ZREM', KEYS[3], id)
local lost = tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
if ARGV[4] == '1' then lost = lost + 1 end
redis.call('HSET', KEYS[1], 'lost', lost)
if ARGV[4] == '1' and lost >= tonumber(ARGV[5]) then
  local message = 'its worker was lost ' .. lost .. ' times; see attempts'
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[2], 'stage', '',
    'error', cjson.encode({code = 'worker_lost', message = message}))
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('SREM', 'stockq:inflight:' .. (redis.call('HGET', KEYS[1], 'owner') or ''), id)
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('EXPIRE', KEYS[2], 120)
  return 'failed'
end
local attempt = tonumber(ARGV[1]) + 1
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', attempt, 'stage', ARGV[6], 'worker', '')
for k, v in pairs(cjson.decode(ARGV[7])) do redis.call('HSET', KEYS[1], k, v) end
redis.call('ZADD', 'stockq:queued', now, id)
return tostring(attempt)
"""

# KEYS[1] job hash, KEYS[2] dead-letter index; ARGV[1] now. A failed or cancelled job queued again
# under the same id: its losses reset, its attempt number (the fencing token) still grows.
RETRY = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status ~= 'failed' and status ~= 'cancelled' then return status end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') + 1
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', attempt, 'lost', 0, 'stage', 'retried',
  'submitted_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'error', 'result', 'finished_at', 'cancel_requested', 'worker')
redis.call('ZREM', KEYS[2], string.sub(KEYS[1], 12))
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
redis.call('SADD', 'stockq:inflight:' .. owner, string.sub(KEYS[1], 12))
redis.call('ZADD', 'stockq:queued', ARGV[1], string.sub(KEYS[1], 12))
return tostring(attempt)
"""

# A new job in one round trip: the request's rate-limit windows, its Idempotency-Key claim, the record,
# the indexes (all jobs, the owner's, expiry), the owner's in-flight set and the submitted counter, after
# trimming up to 100 expired ids from the indexes. KEYS[1] job hash, KEYS[2] index of all jobs, KEYS[3]
# owner's index, KEYS[4] expiry index, KEYS[5] owner's in-flight set, KEYS[6] counter hash ('' = count
# nothing), KEYS[7] idempotency key ('' = none), KEYS[8..] rate-limit window counters (webapp/ratelimit.py);
# ARGV[1] id, ARGV[2] now, ARGV[3] retention s, ARGV[4] in-flight cap, ARGV[5] owner, ARGV[6] counter
# field, ARGV[7] request fingerprint, ARGV[8] claim retention s, ARGV[9] number of windows n, ARGV[10..]
# each window's budget and length (2n values), then the record's field, value pairs.
# Returns {outcome, window counts[, the existing job's HGETALL]}: 'OK'; 'limited' (over a window's budget:
# nothing else done); 'busy' (the owner already has `cap` unfinished jobs); 'reused' (the key was claimed
# with another fingerprint); 'existing' (the key's job). A claim whose job expired is free again.
CREATE = """
local now = tonumber(ARGV[2])
local windows = tonumber(ARGV[9])
local counts, limited = {}, false
for i = 1, windows do
  local n = redis.call('INCR', KEYS[7 + i])
  if n == 1 then redis.call('EXPIRE', KEYS[7 + i], ARGV[9 + 2 * i]) end
  counts[i] = n
  if n > tonumber(ARGV[8 + 2 * i]) then limited = true end
end
if limited then return {'limited', counts} end
if KEYS[7] ~= '' then
  local raw = redis.call('GET', KEYS[7])
  if raw then
    local claim = cjson.decode(raw)
    if claim['fingerprint'] ~= ARGV[7] then return {'reused', counts} end
    local existing = redis.call('HGETALL', 'stockq:job:' .. claim['job_id'])
    if #existing > 0 then return {'existing', counts, existing} end
  end
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)) do
  local sep = string.find(member, '|', 1, true)
  local owner, old = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  redis.call('ZREM', KEYS[2], old)
  redis.call('ZREM', 'stockq:jobs:' .. owner, old)
  redis.call('SREM', 'stockq:inflight:' .. owner, old)
  redis.call('ZREM', KEYS[4], member)
end
local cap = tonumber(ARGV[4])
if redis.call('SCARD', KEYS[5]) >= cap then
  -- members whose record is gone (expired unfinished) no longer count
  for _, old in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if redis.call('EXISTS', 'stockq:job:' .. old) == 0 then redis.call('SREM', KEYS[5], old) end
  end
  if redis.call('SCARD', KEYS[5]) >= cap then return {'busy', counts} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10 + 2 * windows))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[5] .. '|' .. ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('ZADD', 'stockq:queued', now, ARGV[1])
if KEYS[7] ~= '' then
  redis.call('SET', KEYS[7], cjson.encode({fingerprint = ARGV[7], job_id = ARGV[1]}), 'EX', ARGV[8])
end
if KEYS[6] ~= '' then redis.call('HINCRBY', KEYS[6], ARGV[6], 1) end
return {'OK', counts}
"""

# A queued job whose message was lost on its way (taken by a worker that died before starting it, or
# gone with it): published again as attempt + 1, not counted against the job. KEYS[1] job hash; ARGV[1]
# attempt, ARGV[2] now, ARGV[3] who held it ('' = nobody: the message vanished). Returns the attempt.
REPUBLISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then
  return false
end
local log = cjson.decode(redis.call('HGET', KEYS[1], 'attempts') or '[]')
table.insert(log, {attempt = tonumber(ARGV[1]), worker = ARGV[3], started_at = 0,
  ended_at = tonumber(ARGV[2]), outcome = 'message_lost'})
local attempt = tonumber(ARGV[1]) + 1
redis.call('HSET', KEYS[1], 'attempts', cjson.encode(log), 'attempt', attempt)
redis.call('HDEL', KEYS[1], 'received_by')
redis.call('ZADD', 'stockq:queued', ARGV[2], string.sub(KEYS[1], 12))
return tostring(attempt)
"""
