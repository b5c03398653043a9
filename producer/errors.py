"""Exceptions raised by the producer API.

ClaudeQueueError
├── InvalidJobError     (also a ValueError): the job was refused, nothing was queued
└── StreamTimeout       (also a TimeoutError): stream(timeout_s=...) ran out
"""

from __future__ import annotations


class ClaudeQueueError(Exception):
    """Base class of every claude-queue error."""


class InvalidJobError(ClaudeQueueError, ValueError):
    """The job failed validation; the message names each bad field. Nothing was queued."""


class SessionBusy(ClaudeQueueError):
    """The session has a run queued or running, and the caller asked not to wait."""


class StreamTimeout(ClaudeQueueError, TimeoutError):
    """A stream did not reach its stopping point within its time limit."""


class StreamEnded(ClaudeQueueError):
    """A run's stream ended before its `finished` event (session deleted or expired, no follow)."""
