"""Redis ACL rules for the three roles: producer, worker and reader.

Rules are rendered from settings (key prefix, queue name, database), so they name
exactly this deployment's keys. Redis checks the commands a Lua script calls, and
the keys they touch, against the caller's ACL too, so a role holds every command
its scripts run, not only the ones its code sends itself.

- reader: replay (XRANGE, XREVRANGE, XLEN on session logs, GET of the seq),
  follow (SUBSCRIBE to session channels) and list a session's open permission
  requests (LINDEX of its pending list, HGETALL of a run's approvals). Nothing
  that writes, no scripts: a reader sees requests but cannot answer them.
- producer: submit (RQ's enqueue and SUBMIT_LUA), cancel (CANCEL_LUA; a job
  cancelled while queued leaves the RQ queue, recorded canceled), answer
  permission requests (DECIDE_LUA, which records the decision in the run's
  approvals hash and PUBLISHes it on the run's control channel) and list them,
  read, status, list and delete sessions. EVALSHA only of our three scripts
  (first-argument rules), so no other Lua runs; UNLINK only through a selector, so
  it can delete a session's keys without being able to write the lease, state or
  transcript; DECIDE_LUA and its HSETNX only through another, so it reads a run's
  approvals and adds to them only with HSETNX: no decision is ever overwritten.
- worker: everything on our prefix and RQ's, minus the dangerous commands
  (recording permission requests and deciding them on timeout included).

The database is pinned with `+select|<db>`: ACL key patterns ignore databases, so
without the pin a user could reach the same key names in every other database.
`+evalsha|<sha>` and `+select|<db>` rely on Redis's first-argument rules, which
Redis 7 documents as deprecated but still supports.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from typing import Literal, get_args

from redis.connection import parse_url
from rq.defaults import RQ_KEY_PREFIX

from shared.ids import escape_redis_glob
from shared.runstore.scripts import CANCEL_LUA, DECIDE_LUA, SUBMIT_LUA

Role = Literal["producer", "worker", "reader"]
ROLES: tuple[Role, ...] = get_args(Role)

# ACL SETUSER arguments are split on whitespace by redis-cli and in ACL files.
_UNSAFE = re.compile(r"[\s\"'()\x00-\x1f]")
# run ids are uuid4().hex: 32 characters. Exactly 32 `?` keep the run record
# pattern from also matching the wait marker (`...:run:<id>:wait`) or the approvals.
_RUN_ID = "?" * 32

_CONNECTION = ("+ping",)
_PUBSUB_FOLLOW = ("+subscribe", "+unsubscribe")


class AclError(ValueError):
    """A name cannot be written into an ACL rule safely."""


@dataclass(frozen=True, slots=True)
class AclRules:
    """One role's ACL rules: root permissions plus optional selectors."""

    role: Role
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    channels: tuple[str, ...]
    selectors: tuple[tuple[str, ...], ...] = ()

    def tokens(self) -> list[str]:
        """The ACL SETUSER rules, one argument each (a selector is one argument)."""
        # Reset what this role grants; passwords are left alone unless given.
        reset = ["on", "resetkeys", "resetchannels", "clearselectors", "-@all"]
        selectors = [f"({' '.join(selector)})" for selector in self.selectors]
        return [*reset, *self.commands, *self.keys, *self.channels, *selectors]


def _checked(name: str, what: str) -> str:
    if not name or _UNSAFE.search(name):
        raise AclError(f"{what} {name!r} cannot appear in an ACL rule (whitespace, quotes)")
    return name


def script_sha(script: str) -> str:
    """The SHA1 redis-py's register_script sends with EVALSHA."""
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's own script id


def password_hash(password: str) -> str:
    """The `#<sha256>` rule form of a password, so the password itself is never printed."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def database_of(redis_url: str) -> int:
    """The database number a Redis URL selects (0 when it names none)."""
    return int(parse_url(redis_url).get("db") or 0)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class _Names:
    """Glob patterns of this deployment's keys and channels."""

    prefix: str
    queue: str
    rq: str
    db: int

    def session(self, suffix: str) -> str:
        return f"{self.prefix}:{{*}}:{suffix}"

    def channel(self, suffix: str) -> str:
        """A channel pattern: channels carry the database (keys.Keys), pub/sub does not."""
        return f"&{self.session(suffix)}@{self.db}"


def _names(key_prefix: str, queue_name: str, database: int) -> _Names:
    return _Names(
        prefix=escape_redis_glob(_checked(key_prefix, "key prefix")),
        queue=escape_redis_glob(_checked(queue_name, "queue name")),
        rq=escape_redis_glob(RQ_KEY_PREFIX),
        db=database,
    )


def _approvals(n: _Names) -> str:
    """A run's permission requests and their decisions (keys.approvals)."""
    return n.session(f"run:{_RUN_ID}:approvals")


def _reader(n: _Names, select: str) -> AclRules:
    return AclRules(
        role="reader",
        commands=(
            *_CONNECTION,
            select,
            *_PUBSUB_FOLLOW,
            "+xrange",
            "+xrevrange",
            "+xlen",
            "+get",
            # open permission requests: the running run, then its approvals
            "+lindex",
            "+hgetall",
        ),
        keys=(
            f"%R~{n.session('log')}",
            f"%R~{n.session('seq')}",
            f"%R~{n.session('pending')}",
            f"%R~{_approvals(n)}",
        ),
        channels=(n.channel("events"),),
    )


def _producer(n: _Names, select: str) -> AclRules:
    return AclRules(
        role="producer",
        commands=(
            *_CONNECTION,
            select,
            "+info|server",  # RQ reads the server version before it enqueues
            "+multi",
            "+exec",
            "+discard",
            "+watch",
            "+unwatch",
            "+script|load",
            "+script|exists",
            f"+evalsha|{script_sha(SUBMIT_LUA)}",
            f"+evalsha|{script_sha(CANCEL_LUA)}",
            *_PUBSUB_FOLLOW,
            "+publish",
            # reads: replay, session listing, status
            "+get",
            "+exists",
            "+hget",
            "+hgetall",
            "+hmget",  # submit's placement reads the session's pending run records
            "+lindex",
            "+lrange",
            "+llen",
            "+xrange",
            "+xrevrange",
            "+xlen",
            "+zscore",
            "+zrevrange",
            "+smembers",
            "+scan",
            # writes: RQ's enqueue, and what SUBMIT_LUA and CANCEL_LUA call
            "+set",
            "+incr",
            "+expire",
            "+hset",
            "+rpush",
            "+lrem",
            "+sadd",
            "+srem",
            "+zadd",
            "+zrem",
            "+zremrangebyscore",
            "+xadd",
            "+hexists",  # DECIDE_LUA: is there such a request?
            "+lpos",  # a queued run's place in the queue
        ),
        keys=(
            f"~{n.session('run:' + _RUN_ID)}",
            f"~{n.session('run:' + _RUN_ID + ':cancel')}",
            f"%R~{_approvals(n)}",  # open requests (HGETALL); decided only by DECIDE_LUA
            f"~{n.session('pending')}",
            f"~{n.session('seq')}",
            f"~{n.session('log')}",
            f"%R~{n.session('state')}",
            f"%R~{n.session('warm')}",  # submit routes to the worker holding it warm
            f"~{n.prefix}:sessions",
            f"~{n.prefix}:queued",  # SUBMIT_LUA / CANCEL_LUA: the index of unclaimed runs
            f"%W~{n.prefix}:archive-outbox",  # CANCEL_LUA of a queued run (archive on)
            f"%R~{n.prefix}:running",
            f"%R~{n.prefix}:worker-warm:*",  # status lists warm sessions per worker
            f"%W~{n.rq}:job:*",  # write only: a job holds its prompt (status shows no start times)
            f"~{n.rq}:queue:{n.queue}",
            f"~{n.rq}:queue:{n.queue}:high",  # priorities: submit pushes, cancel removes
            f"~{n.rq}:queue:{n.queue}:low",
            f"~{n.rq}:scheduled:{n.queue}",  # delayed runs: submit adds, cancel removes
            f"~{n.rq}:queue:{n.queue}:worker:*",  # a worker's own queue (warm routing)
            f"%W~{n.rq}:canceled:{n.queue}",  # a cancelled queued job is recorded canceled
            f"%W~{n.rq}:queues",
            f"%R~{n.rq}:workers:{n.queue}",
            f"%W~{n.rq}:workers",  # RQ drops a vanished worker from the set while listing
            f"%R~{n.rq}:worker:*",
            f"%R~{n.rq}:execution:*",
            f"%R~{n.rq}:failed:{n.queue}",  # status: runs failed in the last hour
        ),
        channels=(n.channel("events"), n.channel("run:*:control")),
        # Deleting a session removes all its keys; only UNLINK may touch the others.
        # A transcript's size may be read (session show), never its conversation.
        # A run's approvals are written only by DECIDE_LUA's HSETNX (a request's one
        # decision): never HSET, so no decision is ever overwritten.
        selectors=(
            ("+unlink", f"~{n.session('*')}"),
            ("+hstrlen", f"%R~{n.session('transcript')}"),
            (
                f"+evalsha|{script_sha(DECIDE_LUA)}",
                "+hsetnx",
                f"~{n.session('run:' + _RUN_ID)}",
                f"~{_approvals(n)}",
            ),
            # Crons (producer/cron.py): add, list, run, remove.
            (
                "+hget",
                "+hgetall",
                "+hset",
                "+hsetnx",
                "+hdel",
                "+del",
                f"~{n.prefix}:crons",
                f"~{n.prefix}:cron:*",
            ),
        ),
    )


def _worker(n: _Names, select: str) -> AclRules:
    return AclRules(
        role="worker",
        commands=(
            "+@read",
            "+@write",
            "+@transaction",
            "+@pubsub",
            "+@blocking",
            "+evalsha",
            "+script|load",
            "+script|exists",
            # after the categories: FLUSHDB, KEYS, SORT, MIGRATE, INFO, ... go
            "-@dangerous",
            "-function",
            *_CONNECTION,
            select,
            "+info|server",
            "+client|setname",
            "+client|info",
        ),
        keys=(f"~{n.prefix}:*", f"~{n.rq}:*"),
        channels=(
            n.channel("events"),
            n.channel("run:*:control"),
            f"&{n.prefix}:limits@{n.db}",  # a concurrency slot freed (shared/limits.py)
            f"&{n.rq}:pubsub:*",
        ),
    )


_BUILDERS = {"reader": _reader, "producer": _producer, "worker": _worker}


def role_rules(role: Role, *, key_prefix: str, queue_name: str, database: int = 0) -> AclRules:
    """The ACL rules of `role` for this key prefix, queue and database."""
    if role not in _BUILDERS:
        raise AclError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    return _BUILDERS[role](_names(key_prefix, queue_name, database), f"+select|{database}")


def setuser_args(rules: AclRules, user: str, *, password: str | None = None) -> list[str]:
    """Arguments of `ACL SETUSER` (after the command name) for these rules."""
    secret = [] if password is None else ["resetpass", password_hash(password)]
    return [_checked(user, "user name"), *secret, *rules.tokens()]


def setuser_line(rules: AclRules, user: str, *, password: str | None = None) -> str:
    """One `ACL SETUSER ...` line to paste into redis-cli."""
    # Single quotes (where needed) read the same in a shell, in redis-cli and in ACL files.
    args = setuser_args(rules, user, password=password)
    return " ".join(["ACL", "SETUSER", *(shlex.quote(arg) for arg in args)])
