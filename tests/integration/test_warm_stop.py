"""A SIGTERM that reaches a simple-mode worker while it closes an evicted warm CLI (between
jobs, so RQ's handler raises StopRequested) stops the worker, and the CLI with it.

Before the fix the close's `except Exception` caught the StopRequested: the stop was
lost and the worker went on taking jobs (CI saw it as a `--processes 2` pool that did not
stop within 60 s, whose member then ran other tests' jobs)."""

from __future__ import annotations

import signal
from pathlib import Path

from producer.client import Client
from shared.events import EventType
from shared.settings import Settings
from tests.conftest import WorkerFactory
from tests.helpers import wait_until
from worker.proctree import is_alive

STREAM_TIMEOUT_S = 60.0
LOG_WAIT_S = 30.0


def _finished(client: Client, session_id: str, prompt: str) -> dict[str, object]:
    handle = client.submit(session_id=session_id, prompt=prompt)
    events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
    assert events[-1].type is EventType.FINISHED
    (started,) = [e.data for e in events if e.type is EventType.STARTED]
    return dict(events[-1].data) | {"pid": started["pid"]}


def test_a_stop_during_an_eviction_close_is_not_lost(
    client: Client, settings: Settings, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    one_warm = settings.model_copy(update={"warm_max": 1})
    worker = start_worker("evict", mode="simple", settings_override=one_warm)
    # Its CLI stays in its turn after the result, so it ignores the stdin close that
    # ends an idle CLI: its close waits a second before the kill, the window we need.
    first = _finished(client, "lingers", "FAKE: hang_after_result")
    assert first["kept_warm"] is True, first
    second = _finished(client, "pushes-out", "hi")  # its park evicts the first CLI
    assert second["status"] == "succeeded", second
    log = tmp_path / "evict.log"
    wait_until(lambda: '"warm_cli_evicted"' in log.read_text(errors="replace"), LOG_WAIT_S)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert not is_alive(int(str(first["pid"])))  # closed when the worker stopped
    assert not is_alive(int(str(second["pid"])))
