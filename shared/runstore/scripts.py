"""The Lua scripts behind RunStore: each run transition and event write is one of them.

Every event is written by one of these scripts, which assign the session's seq,
append the envelope to the session log and publish it, all in one round trip.
Run state moves only through these scripts too, so exactly one party can win
each transition (queued -> running, queued -> cancelled, running -> finished),
and only the winner publishes the matching events.

Run record states: queued -> running -> finished (with final_status).
KEYS and ARGV are built in shared/runstore/calls.py, and nowhere else.
"""

from __future__ import annotations

# One Lua helper appended to by every writing script: seq, XADD, PUBLISH.
_APPEND_FN = """
local function append(seq_key, log_key, channel, maxlen, body)
  local seq = redis.call('INCR', seq_key)
  local env = '{"seq":' .. seq .. ',' .. body
  redis.call('XADD', log_key, 'MAXLEN', '~', maxlen, seq .. '-0', 'e', env)
  redis.call('PUBLISH', channel, env)
  return seq
end
-- With the archive on, the caller passes its outbox stream as the last key: the run
-- is queued for archiving in the same atomic step that writes its `finished`.
local function to_archive(outbox, session_id, run_id, seq, now)
  if outbox then
    redis.call('XADD', outbox, '*', 'session_id', session_id, 'run_id', run_id,
      'seq', seq, 'at', now)
  end
end
local function touch(seq_key, log_key, sessions_key, ttl, now, session_id)
  redis.call('EXPIRE', seq_key, ttl)
  redis.call('EXPIRE', log_key, ttl)
  redis.call('ZADD', sessions_key, now, session_id)
end
"""

# KEYS: run, pending, seq, log, sessions, queued_index
# ARGV: channel, maxlen, ttl, now, session_id, run_id, queued_body
SUBMIT_LUA = (
    _APPEND_FN
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('run exists') end
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[5] .. ' ' .. ARGV[6])
redis.call('HSET', KEYS[1], 'status', 'queued', 'session_id', ARGV[5], 'submitted_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local seq = append(KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[7])
touch(KEYS[3], KEYS[4], KEYS[5], ARGV[3], ARGV[4], ARGV[5])
return seq
"""
)

# KEYS: run, pending, running, lease, fence, wait_marker, waiting, queued_index
# ARGV: run_id, session_id, worker, host, now, ttl, lease_ttl_ms
# One run at a time per session, in submit order: a run may start only when it is
# the head of the session's pending list and nobody holds the session lease.
# Returns {'claimed', token}, {'waiting', head}, or {state} when this delivery must
# not run at all ('running' / 'finished': a duplicate or a run cancelled meanwhile).
# A waiting worker calls again at least every lease renewal, which keeps its wait
# marker alive; if it dies, the marker expires and the reaper ends the run.
CLAIM_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' or status == 'finished' then
  redis.call('DEL', KEYS[6])
  redis.call('HDEL', KEYS[7], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[2] .. ' ' .. ARGV[1])
  return {status}
end
if not status then
  -- a job placed in the queue without a producer: give it a record now
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('HSET', KEYS[1], 'status', 'queued', 'session_id', ARGV[2], 'submitted_at', ARGV[5])
end
local head = redis.call('LINDEX', KEYS[2], 0)
if head ~= ARGV[1] or redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('SET', KEYS[6], ARGV[3], 'PX', ARGV[7])
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[2])
  return {'waiting', head or ''}
end
redis.call('DEL', KEYS[6])
redis.call('HDEL', KEYS[7], ARGV[1])
local token = tostring(redis.call('INCR', KEYS[5]))
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('SET', KEYS[4], token, 'PX', ARGV[7])
redis.call('ZREM', KEYS[8], ARGV[2] .. ' ' .. ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'running', 'owner', token, 'worker', ARGV[3],
  'host', ARGV[4], 'started_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return {'claimed', token}
"""

# KEYS: lease, run   ARGV: token, lease_ttl_ms
# The heartbeat: extend the lease only while it is still ours. 0 = lost.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'status') ~= 'running' then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: run, pending, running, lease, seq, log, sessions, wait_marker, waiting, queued_index
#       [, archive_outbox]
# ARGV: channel, maxlen, ttl, now, session_id, run_id, final_status, condition, bodies...
# End a run from outside its own runner, writing its closing events.
# condition 'lease_gone': the reaper; a running run is lost only if no lease is alive.
# condition 'wait_gone': the reaper; a queued run held by a worker that stopped
#   renewing its wait marker (it died while waiting its turn) is lost.
# condition 'worker:<name>': that worker's main process, after its work horse died.
# Returns 1 if this call finished the run, else 0.
FORCE_FINISH_LUA = (
    _APPEND_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'status', 'worker', 'owner')
if ARGV[8] == 'wait_gone' then
  if run[1] ~= 'queued' then
    redis.call('HDEL', KEYS[9], ARGV[6])  -- claimed or cancelled meanwhile
    return 0
  end
  if redis.call('EXISTS', KEYS[8]) == 1 then return 0 end
  redis.call('HDEL', KEYS[9], ARGV[6])
elseif run[1] ~= 'running' then
  return 0
elseif ARGV[8] == 'lease_gone' then
  if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
elseif ARGV[8] ~= 'worker:' .. (run[2] or '') then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'finished', 'final_status', ARGV[7], 'finished_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'pid', 'pid_start')
redis.call('ZREM', KEYS[10], ARGV[5] .. ' ' .. ARGV[6])
redis.call('LREM', KEYS[2], 0, ARGV[6])
redis.call('HDEL', KEYS[3], ARGV[6])
if run[3] and redis.call('GET', KEYS[4]) == run[3] then redis.call('DEL', KEYS[4]) end
local last = 0
for i = 9, #ARGV do last = append(KEYS[5], KEYS[6], ARGV[1], ARGV[2], ARGV[i]) end
to_archive(KEYS[11], ARGV[5], ARGV[6], last, ARGV[4])
touch(KEYS[5], KEYS[6], KEYS[7], ARGV[3], ARGV[4], ARGV[5])
return 1
"""
)

# KEYS: run, seq, log, sessions, pending, running, lease [, archive_outbox]
# ARGV: channel, maxlen, ttl, now, session_id, run_id, token, first_index, final_status,
#       touch (1: refresh expiries and the session index), seq_hint, bodies...
# Idempotent per run: bodies whose run-local index was already written are skipped,
# so a retry after a lost reply never duplicates. Fenced: refused (-1) unless the
# caller's token is both the run's owner and the session's current lease, so a worker
# that lost its lease cannot publish into the session any more.
# seq_hint: 0, or the seq the writer expects the first body to get, each body then a
# whole envelope starting `{"seq":<hint + its position>,`. When the seqs come out as
# expected the bodies are logged and published as they are: Lua makes no new string of
# them (Redis's Lua hashes every byte of every string it makes, a quarter of its time
# per 2 KB event). Otherwise each prefix is replaced by the real one.
PUBLISH_LUA = (
    _APPEND_FN
    + """
local st = redis.call('HMGET', KEYS[1], 'status', 'owner', 'pub_idx')
if st[2] ~= ARGV[7] then return -1 end
local last = tonumber(st[3] or '0')
local first = tonumber(ARGV[8])
if st[1] ~= 'running' then
  -- a retry of a final write whose reply was lost is fine; anything new is refused
  if st[1] == 'finished' and last >= first + (#ARGV - 12) then return 0 end
  return -1
end
if redis.call('GET', KEYS[7]) ~= ARGV[7] then return -1 end
-- Bodies whose index was written already are skipped; the rest get their seqs from one
-- INCRBY, and the log is trimmed once (one atomic step: nobody sees it in between).
local from = math.max(12, last - first + 13)
local seq = 0
if from <= #ARGV then
  local n = #ARGV - from + 1
  local hint = tonumber(ARGV[11])
  seq = redis.call('INCRBY', KEYS[2], n) - n
  local as_is = hint > 0 and seq + 1 == hint + from - 12
  for i = from, #ARGV do
    seq = seq + 1
    local env = ARGV[i]
    if not as_is then
      if hint > 0 then env = string.sub(env, #('{"seq":' .. (hint + i - 12) .. ',') + 1) end
      env = '{"seq":' .. seq .. ',' .. env
    end
    redis.call('XADD', KEYS[3], seq .. '-0', 'e', env)
    redis.call('PUBLISH', ARGV[1], env)
  end
  redis.call('XTRIM', KEYS[3], 'MAXLEN', '~', ARGV[2])
  last = first + (#ARGV - 12)
end
redis.call('HSET', KEYS[1], 'pub_idx', last)
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'status', 'finished', 'final_status', ARGV[9],
    'finished_at', ARGV[4])
  redis.call('HDEL', KEYS[1], 'pid', 'pid_start')
  redis.call('LREM', KEYS[5], 0, ARGV[6])
  redis.call('HDEL', KEYS[6], ARGV[6])
  redis.call('DEL', KEYS[7])
  to_archive(KEYS[8], ARGV[5], ARGV[6], redis.call('GET', KEYS[2]), ARGV[4])
end
if ARGV[10] == '1' then touch(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4], ARGV[5]) end
return seq
"""
)

# KEYS: run, cancel_flag, pending, seq, log, sessions, queued_index [, archive_outbox]
# ARGV: channel, maxlen, ttl, now, session_id, run_id, control_channel, control_msg,
#       interrupted_body, finished_body, grace_s (the flag's value)
CANCEL_LUA = (
    _APPEND_FN
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'nothing_to_cancel' end
if status == 'finished' then return 'already_finished' end
redis.call('SET', KEYS[2], ARGV[11], 'EX', ARGV[3])
if status == 'queued' then
  redis.call('ZREM', KEYS[7], ARGV[5] .. ' ' .. ARGV[6])
  redis.call('HSET', KEYS[1], 'status', 'finished', 'final_status', 'interrupted',
    'finished_at', ARGV[4])
  redis.call('LREM', KEYS[3], 0, ARGV[6])
  append(KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[9])
  local last = append(KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[10])
  to_archive(KEYS[8], ARGV[5], ARGV[6], last, ARGV[4])
  touch(KEYS[4], KEYS[5], KEYS[6], ARGV[3], ARGV[4], ARGV[5])
  return 'cancelled_queued'
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 'cancelled_running'
"""
)

# Decide a permission request once: the first decision wins, later ones learn so.
# KEYS: run, approvals
# ARGV: request_id, decision_json, control_channel ('' = tell nobody), control_msg
DECIDE_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'run_not_running' end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 'unknown_request' end
if redis.call('HSETNX', KEYS[2], ARGV[1] .. ':decision', ARGV[2]) == 0 then
  return 'already_decided'
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 'delivered'
"""

# Withdraw a warm advertisement only if it is still this worker's (another may own it now).
# KEYS: warm_owner   ARGV: worker name
WITHDRAW_WARM_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
