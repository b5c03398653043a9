"""CLAUDE_QUEUE_CLI_NICE: a real worker runs the CLI, and what the CLI starts, at that
niceness, and lowers the CLI's autogroup with it, while the worker keeps its own
priority. Judged by the kernel (getpriority, /proc/<pid>/autogroup)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producer.client import Client
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import kill_if_alive, until_grandchild

GRANDCHILD = "FAKE: grandchild seconds=300"
AUTOGROUPS = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_niceness(pid: int) -> int | None:
    """The nice of the process's autogroup ("/autogroup-42 nice 10"), None without them."""
    if not AUTOGROUPS.exists() or AUTOGROUPS.read_text().strip() != "1":
        return None
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


@pytest.mark.parametrize("nice", [7, 0])
def test_the_cli_and_its_children_run_at_the_configured_niceness(
    client: Client, settings: Settings, start_worker: WorkerFactory, nice: int
) -> None:
    worker = start_worker(settings_override=settings.model_copy(update={"cli_nice": nice}))
    handle = client.submit(session_id=f"nice{nice}", prompt=GRANDCHILD)
    cli_pid, grandchild = until_grandchild(handle)
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)  # the worker inherited the test's
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == base
        assert os.getpriority(os.PRIO_PROCESS, cli_pid) == min(19, base + nice)
        assert os.getpriority(os.PRIO_PROCESS, grandchild) == min(19, base + nice)
        if (group := autogroup_niceness(cli_pid)) is not None:
            # A new session's group starts at 0; the worker sets the CLI's to `nice`.
            assert group == nice
    finally:
        handle.cancel(wait=True, timeout_s=30)
        kill_if_alive(cli_pid, grandchild)
