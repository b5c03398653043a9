"""RunStore: the one owner of run and session records in Redis.

Who may write what: producers submit and cancel runs and answer permission requests;
the worker holding a run's lease claims it, renews that lease, appends the run's
events (finishing it with the last batch) and records its CLI's permission requests
(deciding them itself when they time out or the run ends; only the first decision of
a request is kept); the reaper or the owning worker's main process force-finishes a
run whose runner is gone. Each goes through this package, so nothing else writes a
run record, approvals hash, pending list, lease, seq counter or session log (the
worker's conversation state and transcript are written by worker/session.py).

- scripts.py: the Lua scripts (each transition is atomic, fenced where it must be).
- model.py: states, conditions and results, as types.
- calls.py / replies.py: KEYS/ARGV of every call, and what every reply means (pure).
- placing.py: where submit puts a run (behind its session's waiting runs, on which queue).
- sync.py / aio.py: RunStore and AsyncRunStore, thin faces that only do I/O; registry.py
  holds RunStore's part for what workers hold (warm CLIs, running and held runs);
  scripting.py and line.py run its scripts (event writes on one held connection).
"""

from shared.runstore.aio import AsyncRunStore
from shared.runstore.calls import REPLAY_PAGE, RunCalls
from shared.runstore.model import (
    AnswerOutcome,
    Appended,
    Busy,
    CancelOutcome,
    Claimed,
    ClaimResult,
    Condition,
    Decision,
    Deleted,
    FinishCondition,
    HeldRun,
    NewRun,
    OpenRequest,
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
    "AnswerOutcome",
    "Appended",
    "AsyncRunStore",
    "Busy",
    "CancelOutcome",
    "ClaimResult",
    "Claimed",
    "Condition",
    "Decision",
    "Deleted",
    "FinishCondition",
    "HeldRun",
    "NewRun",
    "OpenRequest",
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
