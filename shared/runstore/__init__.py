"""RunStore: the one owner of run and session records in Redis.

Who may write what: producers submit and cancel runs, the worker holding a run's
lease claims it, renews that lease and appends the run's events (finishing it with
the last batch), and the reaper or the owning worker's main process force-finishes
a run whose runner is gone, each through one of this package's scripts, so nothing
else writes a run record, pending list, lease, seq counter or session log (the
worker's conversation state and transcript are written by worker/session.py).

- scripts.py: the Lua scripts (each transition is atomic, fenced where it must be).
- model.py: states, conditions and results, as types.
- calls.py / replies.py: KEYS/ARGV of every call, and what every reply means (pure).
- sync.py / aio.py: RunStore and AsyncRunStore, thin faces that only do I/O.
"""

from shared.runstore.aio import AsyncRunStore
from shared.runstore.calls import REPLAY_PAGE, RunCalls
from shared.runstore.model import (
    Appended,
    Busy,
    CancelOutcome,
    Claimed,
    ClaimResult,
    Condition,
    Deleted,
    FinishCondition,
    HeldRun,
    NewRun,
    OwnedBy,
    RunRecord,
    RunState,
    SessionInfo,
    SessionState,
    Skip,
    Submitted,
    Waiting,
)
from shared.runstore.sync import RunStore

__all__ = [
    "REPLAY_PAGE",
    "Appended",
    "AsyncRunStore",
    "Busy",
    "CancelOutcome",
    "ClaimResult",
    "Claimed",
    "Condition",
    "Deleted",
    "FinishCondition",
    "HeldRun",
    "NewRun",
    "OwnedBy",
    "RunCalls",
    "RunRecord",
    "RunState",
    "RunStore",
    "SessionInfo",
    "SessionState",
    "Skip",
    "Submitted",
    "Waiting",
]
