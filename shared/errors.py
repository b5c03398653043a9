"""The root of every claude-queue exception; the tree is drawn in producer/errors.py."""

from __future__ import annotations


class ClaudeQueueError(Exception):
    """Base class of every claude-queue error."""
