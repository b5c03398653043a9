"""Exit codes of every `claude-queue` command, the worker included. One table."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RUN_FAILED = 1  # `submit --follow` / `tail --until-finished`: the run did not succeed
    USAGE = 2  # bad arguments or configuration (CLAUDE_QUEUE_*), or a refused request
    REDIS_UNREACHABLE = 3  # Redis did not answer
    NOT_FOUND = 4  # no such session (tail, session show, cancel, approve, deny, requests)
    INTERRUPTED = 130  # Ctrl-C while following: following stopped, the run goes on (128 + SIGINT)
