"""Concurrency limits: at most N runs with one limit key execute at once, across workers.

Why not RQ's RateLimit (rq/rate_limit.py): it counts a job from the moment it is let into
a queue until RQ records its end. Our runs wait for their session's turn after RQ hands
them out, end through our own fenced scripts or the reaper (lost), and a run may be
under two limits at once (its key and the total, `*`). So a slot here is taken in the
same step as the session-order check, by the run heading its session, just before its
claim, and held while its record says `running`. Nothing has to give a slot back for it
to be freed: every acquire first drops holders whose run is no longer running (finished,
lost, cancelled, expired) or that took a slot and never claimed within `stale_s`. So no
slot outlives its run, whoever ended it; releasing at the end only wakes waiters sooner.

Keys: `<prefix>:limit:<key>`, a sorted set of `<session id> <run id>` scored by when the
slot was taken; wake-ups on the channel `<prefix>:limits@<db>`.
"""

from __future__ import annotations

import json

from shared.encode import envelope_header
from shared.keys import Keys
from shared.runstore.scripts import _APPEND_FN

TOTAL = "*"
WAITING_EVENT = "waiting"

# KEYS: pending, lease, wait_marker, waiting, seq, log, sessions, run, slot keys...
# ARGV: run_id, session_id, worker, now, lease_ttl_ms, key_prefix, stale_s, '' (unused),
#       waiting body prefix (waiting_body_prefix), channel, maxlen, ttl,
#       then for each slot key: its limit key, its most
# Returns {'ok'}, {'not_head'} (the session's order decides first) or {'full', key}.
ACQUIRE_LUA = (
    _APPEND_FN
    + """
local head = redis.call('LINDEX', KEYS[1], 0)
if head ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 1 then return {'not_head'} end
local me = ARGV[2] .. ' ' .. ARGV[1]
local now = tonumber(ARGV[4])
local stale = tonumber(ARGV[7])
for i = 9, #KEYS do
  local slot = KEYS[i]
  local limit_key = ARGV[13 + (i - 9) * 2]
  local most = tonumber(ARGV[14 + (i - 9) * 2])
  local held = redis.call('ZRANGE', slot, 0, -1, 'WITHSCORES')
  local mine = false
  for j = 1, #held, 2 do
    local member = held[j]
    local sp = string.find(member, ' ', 1, true)
    local live = false
    if member == me then
      mine = true
      live = true
    elseif sp then
      local record = ARGV[6] .. ':{' .. string.sub(member, 1, sp - 1) .. '}:run:'
        .. string.sub(member, sp + 1)
      local status = redis.call('HGET', record, 'status')
      live = status == 'running' or (status == 'queued' and tonumber(held[j + 1]) > now - stale)
    end
    if not live then redis.call('ZREM', slot, member) end
  end
  if not mine and redis.call('ZCARD', slot) >= most then
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5])
    redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
    if redis.call('HSETNX', KEYS[8], 'limit_wait', limit_key) == 1 then
      local body = ARGV[9] .. '"key":' .. cjson.encode(limit_key) .. '}}'
      append(KEYS[5], KEYS[6], ARGV[10], ARGV[11], body)
    end
    return {'full', limit_key}
  end
end
for i = 9, #KEYS do redis.call('ZADD', KEYS[i], now, me) end
return {'ok'}
"""
)


def slot_key(keys: Keys, limit_key: str) -> str:
    return f"{keys.prefix}:limit:{limit_key}"


def channel(keys: Keys) -> str:
    """Pub/sub channel a freed slot is announced on (carries the db, like every channel)."""
    return f"{keys.prefix}:limits@{keys.db}"


def applicable(limits: dict[str, int], limit_key: str | None) -> list[tuple[str, int]]:
    """The limits a run with `limit_key` is under: its key's (if configured) and the total."""
    found = []
    if limit_key is not None and limit_key in limits:
        found.append((limit_key, limits[limit_key]))
    if TOTAL in limits:
        found.append((TOTAL, limits[TOTAL]))
    return found


def waiting_body_prefix(session_id: str, run_id: str, now: float) -> str:
    """The `waiting` event's body up to its `key` (the script adds the key that is full).

    `waiting` is written as a type of its own; readers that do not know it keep it as an
    unknown type (shared/events.py, forward compatibility).
    """
    data = json.dumps({"reason": "concurrency_limit"})[:-1]
    return (
        f'{envelope_header(session_id, run_id)}"ts":{now!r},"type":"{WAITING_EVENT}","data":{data},'
    )


def member(session_id: str, run_id: str) -> str:
    return f"{session_id} {run_id}"
