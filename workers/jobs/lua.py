"""The job record's state changes as Redis scripts: each reads and writes one record atomically, so a
cancel, a finishing worker, a reaper and a stale delivery can never both win.

Fencing: every delivery of a job carries the attempt number it was published with, and every script
that a worker runs compares it with the record's `attempt`; a stale delivery (a zombie worker, the
broker's backstop redelivery of an attempt the reaper already replaced) changes nothing.

Clocks: every time a script stores or compares (submission, start, lease expiry, finish) is the Redis
server's `TIME`, never a worker's clock, so a host whose clock is off never has its lease reaped early.

Indexes: besides every job and each owner's jobs (by submission time), the scripts keep an index per
status, per type and per status and type, for everyone and per owner (workers/jobs/keys.py), so a filtered
page reads only its own index and the exporter counts with ZCARD. The scripts also touch keys named after
the record's id, owner and type: they assume one Redis server, not a cluster.
"""

# Shared by every script (`script` puts it before each). `write` is how a script changes a record: it notes
# the record, and the script's end publishes "job" once on its channel (keys.job_events), atomically with
# the change, so a watcher never polls (RENEW and RECEIVED touch only the workers' own bookkeeping, which
# no client sees, with redis.call: no event). `set_status` moves the job between the status indexes;
# `log_attempt` appends to the record's attempts log (the one place that writes it); `finish` is the
# bookkeeping of a final state (in-flight set, lease, queue and outbox entries, the done-list a long poll
# waits on).
PRELUDE = """
local changed = nil
local function write(command, key, ...)
  changed = key
  return redis.call(command, key, ...)
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function id_of(key) return string.sub(key, 12) end
local function scopes(owner) return {'stockq:all', 'stockq:tenant:' .. owner} end
local function set_status(key, to)
  local id = id_of(key)
  local from = redis.call('HGET', key, 'status')
  write('HSET', key, 'status', to)
  if from == to then return end
  local owner = redis.call('HGET', key, 'owner') or ''
  local jtype = redis.call('HGET', key, 'type') or ''
  local score = redis.call('ZSCORE', 'stockq:jobs', id) or redis.call('HGET', key, 'submitted_at') or '0'
  for _, scope in ipairs(scopes(owner)) do
    if from then
      redis.call('ZREM', scope .. ':by:' .. from .. ':', id)
      redis.call('ZREM', scope .. ':by:' .. from .. ':' .. jtype, id)
    end
    redis.call('ZADD', scope .. ':by:' .. to .. ':', score, id)
    redis.call('ZADD', scope .. ':by:' .. to .. ':' .. jtype, score, id)
  end
end
local function log_attempt(key, attempt, worker, started_at, ended_at, outcome, next_task)
  local log = cjson.decode(redis.call('HGET', key, 'attempts') or '[]')
  table.insert(log, {attempt = tonumber(attempt), worker = worker or '',
    started_at = tonumber(started_at or '0'), ended_at = ended_at, outcome = outcome, task = next_task})
  write('HSET', key, 'attempts', cjson.encode(log))
end
local function log_running_attempt(key, t, outcome, next_task)
  log_attempt(key, redis.call('HGET', key, 'attempt'), redis.call('HGET', key, 'worker'),
    redis.call('HGET', key, 'started_at'), t, outcome, next_task)
end
local function finish(key)
  local id = id_of(key)
  redis.call('SREM', 'stockq:tenant:' .. (redis.call('HGET', key, 'owner') or '') .. ':inflight', id)
  redis.call('ZREM', 'stockq:leases', id)
  redis.call('ZREM', 'stockq:queued', id)
  redis.call('RPUSH', 'stockq:done:' .. id, '1')
  redis.call('EXPIRE', 'stockq:done:' .. id, 120)
end
local function to_outbox(key, attempt, t)
  redis.call('ZADD', 'stockq:outbox', t, id_of(key) .. '|' .. attempt)
end
local function count(increments)
  for _, c in ipairs(increments) do
    if c[4] == 'float' then redis.call('HINCRBYFLOAT', c[1], c[2], c[3])
    else redis.call('HINCRBY', c[1], c[2], c[3]) end
  end
end
local function trim_expired(t, limit)
  local due = redis.call('ZRANGEBYSCORE', 'stockq:jobs-expiry', '-inf', t, 'LIMIT', 0, limit)
  for _, member in ipairs(due) do
    local a = string.find(member, '|', 1, true)
    local b = string.find(member, '|', a + 1, true)
    local owner, jtype = string.sub(member, 1, a - 1), string.sub(member, a + 1, b - 1)
    local old = string.sub(member, b + 1)
    redis.call('ZREM', 'stockq:jobs', old)
    redis.call('SREM', 'stockq:tenant:' .. owner .. ':inflight', old)
    for _, scope in ipairs(scopes(owner)) do
      redis.call('ZREM', scope .. ':by::' .. jtype, old)
      for _, s in ipairs({'queued', 'running', 'succeeded', 'failed', 'cancelled'}) do
        redis.call('ZREM', scope .. ':by:' .. s .. ':', old)
        redis.call('ZREM', scope .. ':by:' .. s .. ':' .. jtype, old)
      end
    end
    redis.call('ZREM', 'stockq:tenant:' .. owner .. ':jobs', old)
    redis.call('ZREM', 'stockq:jobs-expiry', member)
  end
  return #due
end
-- A job that ends inside a script no worker called (a queued cancel, a dead letter): the finished counter
-- the workers' outcomes add to (workers/counters.py), by type and status.
local function count_finished(key, status)
  redis.call('HINCRBY', 'stockq:metrics:stockq_jobs_finished_total',
    (redis.call('HGET', key, 'type') or '') .. ',' .. status, 1)
end
local function fenced(key, attempt)
  return attempt ~= '' and redis.call('HGET', key, 'attempt') ~= attempt
end
"""

# KEYS[1] job hash; ARGV[1] allowed from-states (comma list), ARGV[2] new state, ARGV[3] json of extra
# fields, ARGV[4] the caller's attempt ('' = not a delivery), ARGV[5] json list of counter increments
# made only when the change applies ([hash, field, amount, 'float' or ''], workers/counters.py). A final
# state gets its finished_at (Redis time) and the final bookkeeping. Returns 'applied', 'stale',
# 'refused' or 'missing'.
TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if fenced(KEYS[1], ARGV[4]) then return 'stale' end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 'refused' end
set_status(KEYS[1], ARGV[2])
for k, v in pairs(cjson.decode(ARGV[3])) do write('HSET', KEYS[1], k, v) end
if ARGV[2] == 'succeeded' or ARGV[2] == 'failed' or ARGV[2] == 'cancelled' then
  write('HSET', KEYS[1], 'finished_at', now(), 'stage', '')
  finish(KEYS[1])
end
count(cjson.decode(ARGV[5]))
return 'applied'
"""

# How a delivery's work ended, recorded once: the outcome, the execution count and the counters in one
# step (a worker killed before this step recorded nothing, and its next attempt runs the work again).
# KEYS[1] job hash; ARGV[1] attempt ('' = a job this process does not run: a single-flight waiter),
# ARGV[2] kind (succeeded | failed | cancelled), ARGV[3] json result (succeeded) or error (else),
# ARGV[4] '1' when a late cancel keeps a success (the work recorded its result elsewhere), ARGV[5] json
# {kind: counter increments}. A success whose cancel was requested meanwhile ends cancelled. Returns the
# kind recorded, or 'stale', 'refused', 'missing'.
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if fenced(KEYS[1], ARGV[1]) then return 'stale' end
if status ~= 'running' and status ~= 'queued' then return 'refused' end
local kind, payload = ARGV[2], ARGV[3]
if kind == 'succeeded' and ARGV[4] ~= '1' and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  kind, payload = 'cancelled', cjson.encode({code = 'cancelled', message = 'cancelled by request'})
end
local t = now()
if status == 'running' then log_running_attempt(KEYS[1], t, kind) end
if ARGV[1] ~= '' then write('HINCRBY', KEYS[1], 'executions', 1) end
set_status(KEYS[1], kind)
write('HSET', KEYS[1], 'finished_at', t, 'stage', '')
if kind == 'succeeded' then write('HSET', KEYS[1], 'result', payload)
else write('HSET', KEYS[1], 'error', payload) end
finish(KEYS[1])
count(cjson.decode(ARGV[5])[kind] or {})
return kind
"""

# A cancel, decided and applied in one step. KEYS[1] job hash; ARGV[1] comma list of the types that can
# stop while running. Returns 'cancelled' (was queued), 'cancelling' (running: stops at its next stage
# boundary; a requeue before that ends it cancelled), 'not_cancellable', 'finished' or 'missing'.
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' then
  set_status(KEYS[1], 'cancelled')
  write('HSET', KEYS[1], 'finished_at', now(), 'stage', '',
    'error', cjson.encode({code = 'cancelled', message = 'cancelled before it ran'}))
  finish(KEYS[1])
  count_finished(KEYS[1], 'cancelled')
  redis.call('ZREM', 'stockq:outbox', id_of(KEYS[1]) .. '|' .. redis.call('HGET', KEYS[1], 'attempt'))
  return 'cancelled'
end
if status ~= 'running' then return 'finished' end
local jtype = redis.call('HGET', KEYS[1], 'type') or ''
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == jtype then
    write('HSET', KEYS[1], 'cancel_requested', 1)
    return 'cancelling'
  end
end
return 'not_cancellable'
"""

# KEYS[1] job hash; ARGV[1] delivered attempt, ARGV[2] worker, ARGV[3] lease seconds. Only a queued job
# whose attempt is the delivered one starts: {'started', owner}; else why not ('stale', 'missing',
# 'running' or 'finished').
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if fenced(KEYS[1], ARGV[1]) then return 'stale' end
if status == 'running' then return 'running' end
if status ~= 'queued' then return 'finished' end
local t = now()
local expires = t + tonumber(ARGV[3])
set_status(KEYS[1], 'running')
write('HSET', KEYS[1], 'started_at', t, 'worker', ARGV[2], 'lease_expires_at', expires, 'stage', '')
redis.call('ZADD', 'stockq:leases', expires, id_of(KEYS[1]))
redis.call('ZREM', 'stockq:queued', id_of(KEYS[1]))
return {'started', redis.call('HGET', KEYS[1], 'owner') or ''}
"""

# KEYS[1] job hash; ARGV[1] attempt, ARGV[2] lease seconds. 1 when renewed, 0 when not this attempt's.
# No event: the lease is the workers' own bookkeeping, renewed every few seconds, and no client sees it.
RENEW = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or fenced(KEYS[1], ARGV[1]) then return 0 end
local expires = now() + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_expires_at', expires)
redis.call('ZADD', 'stockq:leases', expires, id_of(KEYS[1]))
return 1
"""

# KEYS[1] job hash; ARGV[1] attempt ('' = any), then field, value pairs. Progress lands only on the
# running attempt: never on a finished job, nor on an expired one (which would come back hollow).
SET_IF_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or fenced(KEYS[1], ARGV[1]) then return 0 end
write('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# A stage boundary of the running attempt. KEYS[1] job hash; ARGV[1] attempt, ARGV[2] stage. Returns 2
# when a cancel was requested (the job stops here, whichever attempt asks), else 1 when the stage was set
# or 0 when this attempt no longer runs the job.
STAGE = """
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 2 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or fenced(KEYS[1], ARGV[1]) then return 0 end
write('HSET', KEYS[1], 'stage', ARGV[2])
return 1
"""

# A running attempt given up: its worker died (the lease expired, or its pool process was lost) or it
# handed itself on (preemption, a hand-off to another task). KEYS[1] job hash; ARGV[1] attempt, ARGV[2]
# outcome, ARGV[3] '1' when the loss counts against the job (a lost worker), ARGV[4] max losses, ARGV[5]
# stage to show while queued again, ARGV[6] json of fields to set when requeued (the next task, say),
# ARGV[7] '1' to require an expired lease (the reaper). A job whose cancel was requested ends cancelled
# instead. Returns {'requeued', attempt} (published through the outbox), 'failed' (dead-lettered),
# 'cancelled', or 'not_owner'.
REQUEUE = """
local id = id_of(KEYS[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or fenced(KEYS[1], ARGV[1]) then
  redis.call('ZREM', 'stockq:leases', id)
  return 'not_owner'
end
local t = now()
if ARGV[7] == '1' and tonumber(redis.call('HGET', KEYS[1], 'lease_expires_at') or '0') > t then
  return 'not_owner'
end
local fields = cjson.decode(ARGV[6])
-- a hand-off names the task the job goes on as (the attempts log tells it from a retry)
log_running_attempt(KEYS[1], t, ARGV[2], fields['task'])
redis.call('ZREM', 'stockq:leases', id)
local lost = tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
if ARGV[3] == '1' then lost = lost + 1 end
write('HSET', KEYS[1], 'lost', lost)
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  set_status(KEYS[1], 'cancelled')
  write('HSET', KEYS[1], 'finished_at', t, 'stage', '',
    'error', cjson.encode({code = 'cancelled', message = 'cancelled by request'}))
  finish(KEYS[1])
  count_finished(KEYS[1], 'cancelled')
  return 'cancelled'
end
if ARGV[3] == '1' and lost >= tonumber(ARGV[4]) then
  set_status(KEYS[1], 'failed')
  write('HSET', KEYS[1], 'finished_at', t, 'stage', '',
    'error', cjson.encode({code = 'worker_lost',
                           message = 'its worker was lost ' .. lost .. ' times; see attempts'}))
  redis.call('ZADD', 'stockq:deadletter', t, id)
  finish(KEYS[1])
  count_finished(KEYS[1], 'failed')
  return 'failed'
end
local attempt = tonumber(ARGV[1]) + 1
set_status(KEYS[1], 'queued')
write('HSET', KEYS[1], 'attempt', attempt, 'stage', ARGV[5], 'worker', '')
for k, v in pairs(fields) do write('HSET', KEYS[1], k, v) end
redis.call('ZADD', 'stockq:queued', t, id)
to_outbox(KEYS[1], attempt, t)
return {'requeued', attempt}
"""

# A failed or cancelled job queued again under the same id: its losses reset, its attempt number (the
# fencing token) still grows, and it counts against its owner's in-flight cap again. KEYS[1] job hash;
# ARGV[1] the owner's in-flight cap. Returns {'queued', attempt}, 'busy', 'missing' or the status.
RETRY = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'failed' and status ~= 'cancelled' then return status end
local id = id_of(KEYS[1])
local inflight = 'stockq:tenant:' .. (redis.call('HGET', KEYS[1], 'owner') or '') .. ':inflight'
if redis.call('SCARD', inflight) >= tonumber(ARGV[1]) then
  for _, old in ipairs(redis.call('SMEMBERS', inflight)) do
    if redis.call('EXISTS', 'stockq:job:' .. old) == 0 then redis.call('SREM', inflight, old) end
  end
  if redis.call('SCARD', inflight) >= tonumber(ARGV[1]) then return 'busy' end
end
local t = now()
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') + 1
set_status(KEYS[1], 'queued')
write('HSET', KEYS[1], 'attempt', attempt, 'lost', 0, 'stage', 'retried', 'submitted_at', t)
write('HDEL', KEYS[1], 'error', 'result', 'finished_at', 'cancel_requested', 'worker')
redis.call('ZREM', 'stockq:deadletter', id)
redis.call('SADD', inflight, id)
redis.call('ZADD', 'stockq:queued', t, id)
to_outbox(KEYS[1], attempt, t)
return {'queued', attempt}
"""

# A new job in one round trip: the request's rate-limit windows, its Idempotency-Key claim, the record,
# its indexes, the owner's in-flight set, the outbox entry of its first message and the submitted counter,
# after trimming up to 100 expired ids from the indexes. KEYS[1] job hash, KEYS[2] owner's in-flight set,
# KEYS[3] counter hash ('' = count nothing), KEYS[4] idempotency key ('' = none), KEYS[5..] rate-limit
# window counters (webapp/ratelimit.py); ARGV[1] id, ARGV[2] retention s, ARGV[3] in-flight cap,
# ARGV[4] owner, ARGV[5] type (the counter's field too), ARGV[6] request fingerprint, ARGV[7] claim
# retention s, ARGV[8] number of windows n, ARGV[9..] each window's budget and length (2n values), then
# the record's field, value pairs. Returns {outcome, window counts, submitted_at | the existing job's
# HGETALL}: 'OK'; 'limited' (over a window's budget: nothing else done); 'busy' (the owner already has
# `cap` unfinished jobs); 'reused' (the key was claimed with another fingerprint); 'existing' (the key's
# job). A claim whose job expired is free again.
CREATE = """
local t = now()
local windows = tonumber(ARGV[8])
local counts, limited = {}, false
for i = 1, windows do
  local n = redis.call('INCR', KEYS[4 + i])
  if n == 1 then redis.call('EXPIRE', KEYS[4 + i], ARGV[8 + 2 * i]) end
  counts[i] = n
  if n > tonumber(ARGV[7 + 2 * i]) then limited = true end
end
if limited then return {'limited', counts} end
if KEYS[4] ~= '' then
  local raw = redis.call('GET', KEYS[4])
  if raw then
    local claim = cjson.decode(raw)
    if claim['fingerprint'] ~= ARGV[6] then return {'reused', counts} end
    local existing = redis.call('HGETALL', 'stockq:job:' .. claim['job_id'])
    if #existing > 0 then return {'existing', counts, existing} end
  end
end
trim_expired(t, 100)
local cap = tonumber(ARGV[3])
if redis.call('SCARD', KEYS[2]) >= cap then
  -- members whose record is gone (expired unfinished) no longer count
  for _, old in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', 'stockq:job:' .. old) == 0 then redis.call('SREM', KEYS[2], old) end
  end
  if redis.call('SCARD', KEYS[2]) >= cap then return {'busy', counts} end
end
local id, owner, jtype = ARGV[1], ARGV[4], ARGV[5]
write('HSET', KEYS[1], unpack(ARGV, 9 + 2 * windows))
write('HSET', KEYS[1], 'submitted_at', t)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', 'stockq:jobs', t, id)
redis.call('ZADD', 'stockq:tenant:' .. owner .. ':jobs', t, id)
for _, scope in ipairs(scopes(owner)) do
  redis.call('ZADD', scope .. ':by::' .. jtype, t, id)
  redis.call('ZADD', scope .. ':by:queued:', t, id)
  redis.call('ZADD', scope .. ':by:queued:' .. jtype, t, id)
end
redis.call('ZADD', 'stockq:jobs-expiry', t + tonumber(ARGV[2]), owner .. '|' .. jtype .. '|' .. id)
redis.call('SADD', KEYS[2], id)
redis.call('ZADD', 'stockq:queued', t, id)
to_outbox(KEYS[1], 1, t)
if KEYS[4] ~= '' then
  redis.call('SET', KEYS[4], cjson.encode({fingerprint = ARGV[6], job_id = id}), 'EX', ARGV[7])
end
if KEYS[3] ~= '' then redis.call('HINCRBY', KEYS[3], jtype, 1) end
return {'OK', counts, tostring(t)}
"""

# A queued job whose message was lost on its way (taken by a worker that died before starting it, or
# gone with it): published again as attempt + 1, not counted against the job. KEYS[1] job hash; ARGV[1]
# attempt, ARGV[2] who held it ('' = nobody: the message vanished). Returns the attempt, or false.
REPUBLISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' or fenced(KEYS[1], ARGV[1]) then return false end
local t = now()
log_attempt(KEYS[1], ARGV[1], ARGV[2], 0, t, 'message_lost')
local attempt = tonumber(ARGV[1]) + 1
write('HSET', KEYS[1], 'attempt', attempt)
write('HDEL', KEYS[1], 'received_by')
redis.call('ZADD', 'stockq:queued', t, id_of(KEYS[1]))
redis.call('ZREM', 'stockq:outbox', id_of(KEYS[1]) .. '|' .. ARGV[1])
to_outbox(KEYS[1], attempt, t)
return tostring(attempt)
"""

# The outbox entries due: messages of state changes whose publish was never confirmed (the publisher died
# or the broker refused it), with the record's current status and attempt. KEYS: none; ARGV[1] due
# before (Redis time minus the grace, computed here), ARGV[2] limit. Entries of a job that moved on are
# dropped. Returns a flat list of id, attempt pairs to publish again.
OUTBOX_DUE = """
local due = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', 'stockq:outbox', '-inf', now() - tonumber(ARGV[1]),
                                   'LIMIT', 0, tonumber(ARGV[2]))) do
  local sep = string.find(member, '|', 1, true)
  local id, attempt = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  local key = 'stockq:job:' .. id
  if redis.call('HGET', key, 'status') == 'queued' and redis.call('HGET', key, 'attempt') == attempt then
    table.insert(due, id)
    table.insert(due, attempt)
    redis.call('ZADD', 'stockq:outbox', now(), member)
  else
    redis.call('ZREM', 'stockq:outbox', member)
  end
end
return due
"""

# Index entries of records that expired, trimmed (up to ARGV[1] of them): CREATE trims 100 per submission;
# the reaper and the exporter call this so that counts follow expiries when nothing is submitted.
TRIM = """
return trim_expired(now(), tonumber(ARGV[1]))
"""

# KEYS[1] job hash; ARGV[1] attempt, ARGV[2] worker. Noted on an existing record only: a message whose
# record expired meanwhile must not leave a hollow one (no status, no expiry). No event: no client sees it.
RECEIVED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'received_by', ARGV[2], 'received_attempt', ARGV[1])
return 1
"""

# A line of the job's own log (workers/job_log.py): stamped with Redis time and numbered (`n`, from 0 for
# the job's first line, kept by the lines themselves so that a reader's cursor survives the trim), capped
# at the newest ARGV[2] lines, expiring with the record, announced as "log" on the job's channel. KEYS[1]
# job hash, KEYS[2] its log; ARGV[1] the line (a JSON object), ARGV[2] cap. A line of a record that is gone
# is dropped (no log outlives its job). Returns the line's number, or -1 when dropped.
APPEND_LOG = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return -1 end
local last = redis.call('LINDEX', KEYS[2], -1)
local line = cjson.decode(ARGV[1])
line['n'] = last and cjson.decode(last)['n'] + 1 or 0
line['ts'] = now()
redis.call('RPUSH', KEYS[2], cjson.encode(line))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('PUBLISH', 'stockq:jobevents:' .. id_of(KEYS[1]), 'log')
return line['n']
"""

# The lines numbered `after` and on, read in one step however the log was trimmed meanwhile. KEYS[1] the
# job's log; ARGV[1] after, ARGV[2] limit. Returns the lines (JSON), oldest first.
LOG_LINES = """
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {} end
local start = math.max(0, tonumber(ARGV[1]) - cjson.decode(first)['n'])
return redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""

# What ends every script: the one event of the change it made (PRELUDE's `write`).
_ANNOUNCE = """
local out = body()
if changed then redis.call('PUBLISH', 'stockq:jobevents:' .. id_of(changed), 'job') end
return out
"""


def script(body: str) -> str:
    """A script as the registry loads it: the PRELUDE, then `body` run as a function whose change, if it
    made one, is published once on the record's channel before its answer is returned."""
    return f"{PRELUDE}local function body()\n{body}\nend\n{_ANNOUNCE}"
