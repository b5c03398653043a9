"""`claude-queue worker --processes N`: supervise N worker processes on one host.

Each member is a full `claude-queue worker` process. The pool forwards SIGTERM
and SIGINT to its members (so their own warm/cold shutdown applies), and
replaces a member that dies unexpectedly unless the pool is stopping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

import redis
import structlog

from shared.connection import sync_redis
from shared.exitcodes import ExitCode
from shared.logging import configure_logging
from shared.metrics import absorb_dead_process
from shared.settings import Settings
from shared.urls import redact_url
from worker.entry import default_worker_name
from worker.proctree import hide_environment

log = structlog.get_logger(__name__)

_RESTART_BACKOFF_S = 1.0
_SUPERVISE_EVERY_S = 0.5


def _member_argv(name: str, *, burst: bool, mode: str, metrics_dir: str | None) -> list[str]:
    argv = [sys.executable, "-m", "producer", "worker", "--name", name, "--mode", mode]
    if metrics_dir is not None:  # members write metrics there; the pool serves them
        argv += ["--metrics-dir", metrics_dir]
    return [*argv, "--burst"] if burst else argv


def run_pool(
    settings: Settings,
    *,
    processes: int,
    burst: bool,
    name: str | None,
    mode: str,
    metrics_dir: str | None = None,
) -> int:
    """Run until every member has exited (burst) or the pool is signalled to stop."""
    configure_logging(settings)
    hide_environment()  # members hide their own; the pool holds the same secrets
    try:
        with sync_redis(settings) as connection:
            connection.ping()
    except (redis.RedisError, OSError) as exc:
        log.error(
            "redis_unreachable", redis=settings.redis_url_redacted, error=redact_url(str(exc))
        )
        return ExitCode.REDIS_UNREACHABLE
    base = name or default_worker_name(settings)
    names = [f"{base}-{index}" for index in range(processes)]
    members: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("pool_stopping", signal=signal.Signals(signum).name)
        for member in members.values():
            if member.poll() is None:
                member.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for member_name in names:
        members[member_name] = subprocess.Popen(
            _member_argv(member_name, burst=burst, mode=mode, metrics_dir=metrics_dir)
        )
    log.info("pool_started", members=names, pid=os.getpid())
    while members:
        for member_name, member in list(members.items()):
            code = member.poll()
            if code is None:
                continue
            del members[member_name]
            if metrics_dir is not None:  # what it counted stays; its files go
                absorb_dead_process(metrics_dir, member.pid, into_pid=os.getpid())
            if stopping or burst or code == 0:
                continue
            if code == ExitCode.USAGE:
                # A configuration error repeats on every restart: stop the pool instead.
                log.error("pool_member_misconfigured", member=member_name)
                forward(signal.SIGTERM, None)
                continue
            log.warning("pool_member_died", member=member_name, exit_code=code)
            time.sleep(_RESTART_BACKOFF_S)
            members[member_name] = subprocess.Popen(
                _member_argv(member_name, burst=burst, mode=mode, metrics_dir=metrics_dir)
            )
        if members:
            time.sleep(_SUPERVISE_EVERY_S)  # a signal cuts this short
    return ExitCode.OK
