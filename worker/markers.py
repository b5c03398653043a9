"""Environment markers every process of a run inherits; /proc sweeps find a run by them.

Kept apart from worker.proctree so that building a command (pure) never loads ctypes.
"""

from __future__ import annotations

RUN_MARKER_ENV = "CLAUDE_QUEUE_RUN_ID"
SCOPE_MARKER_ENV = "CLAUDE_QUEUE_SCOPE"
