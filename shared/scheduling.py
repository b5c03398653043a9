"""Where a new run waits: which priority list, and whether RQ's scheduler holds it. Pure.

Priorities are three RQ queue lists, `<queue>:high`, `<queue>` and `<queue>:low`, that
every worker serves in that order. Their jobs all belong to the shared queue (`origin`),
as a worker's own queue's do (shared/rqjobs.py), so every registry RQ and our reaper
read stays the shared queue's; only the list a job id waits in says its priority.

Session order wins over priority and over time. A worker that takes a later run of a
session before an earlier one waits for its turn while holding it; with no other
worker free, the earlier run would never be taken. So a run never waits where it
could be taken before a run of its session still waiting to be taken:
- it goes no higher than the lowest priority list among them;
- if one of them is held by RQ's scheduler (a delayed run), it is held too, due one
  second after the latest of them (RQ's scheduled registry counts whole seconds and
  enqueues due jobs oldest first, so the second keeps the order);
- a held run is never routed to a warm worker's own queue.

A held run's job names its list in its RQ meta (PRIORITY_META): RQ's scheduler knows
only the shared queue's list, and ours (worker/scheduler.py) reads it when the run is due.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.jobs import Priority

PRIORITIES: tuple[Priority, ...] = ("high", "default", "low")
_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
# Run record fields submit writes beside SUBMIT_LUA's (read back by later submits).
PRIORITY_FIELD = "priority"
SCHEDULED_FIELD = "scheduled_for"
# The RQ job meta entry naming a held run's priority (its list once it is due).
PRIORITY_META = "priority"


def priority_queue_name(queue_name: str, priority: Priority) -> str:
    """The RQ queue whose list holds `priority` runs of `queue_name`."""
    return queue_name if priority == "default" else f"{queue_name}:{priority}"


def served_queue_names(queue_name: str) -> list[str]:
    """The queues a worker listens on, in the order it serves them."""
    return [priority_queue_name(queue_name, p) for p in PRIORITIES]


def lower(a: Priority, b: Priority) -> Priority:
    return a if _RANK[a] >= _RANK[b] else b


def as_priority(value: object) -> Priority | None:
    """A priority read back from Redis (bytes, str, None), or None if it names none."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    for name in PRIORITIES:
        if text == name:
            return name
    return None


def as_epoch(value: object) -> float | None:
    """An epoch time read back from Redis, or None if it is not one."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


@dataclass(frozen=True, slots=True)
class Ahead:
    """A run of the session still waiting to be taken, as its record says."""

    priority: Priority
    scheduled_for: float | None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new run waits."""

    priority: Priority  # the list it goes to (never higher than asked)
    enqueue_at: float | None  # epoch second RQ's scheduler enqueues it; None: at once
    may_route: bool  # may go to a warm worker's own queue


def place(asked: Priority, start_at: float | None, ahead: list[Ahead], *, now: float) -> Placement:
    """Where a run asked for with `asked` and `start_at` waits, behind the runs `ahead`."""
    priority = asked
    due = math.ceil(start_at) if start_at is not None and start_at > now else None
    for run in ahead:
        priority = lower(priority, run.priority)
        if run.scheduled_for is not None and run.scheduled_for > now:
            behind = math.ceil(run.scheduled_for) + 1
            due = behind if due is None else max(due, behind)
    return Placement(priority=priority, enqueue_at=due, may_route=due is None)
