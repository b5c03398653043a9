"""The CLI's CPU priority: below the worker's, so a busy host delivers events first.

A run's CLI starts in a session of its own (so its whole tree can be found and
killed). On Linux with autogroups on (`/proc/sys/kernel/sched_autogroup_enabled`), a
new session is also a new scheduling group, and the scheduler shares the CPU between
groups before it looks at any process's niceness: four CLIs got four shares while a
worker pool's work horses, all in the pool's one session, shared a single one. Events
then waited behind the CLIs' own work (the scale bench's event latency, bench/README.md).

So the worker lowers both: the CLI's niceness, which what it starts inherits, and the
niceness of the CLI's autogroup (`/proc/<pid>/autogroup`, sched(7)), which applies to
everything in its session. A tool that starts a session of its own gets a new group,
at the default priority again.
"""

from __future__ import annotations

import errno
import os

import structlog

log = structlog.get_logger(__name__)


def lower_priority(pid: int, nice: int) -> None:
    """Give the process `pid` (a child of ours, not yet reaped) and its autogroup this
    niceness; 0 leaves both alone. Failures are logged, never raised: a run does not
    depend on its priority."""
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:
        log.warning("cli_priority_not_set", pid=pid, nice=nice, error=str(exc))
    try:
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as autogroup:
            autogroup.write(str(nice))
    except OSError as exc:
        # ENOENT: a kernel without autogroups; EINVAL: off, or not a group of its own
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            log.warning("cli_autogroup_priority_not_set", pid=pid, nice=nice, error=str(exc))


__all__ = ["lower_priority"]
