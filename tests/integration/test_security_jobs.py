"""Only run_prompt runs: raw RQ jobs calling anything else are refused by real workers.

Each test enqueues the hostile jobs before the worker starts, then submits one
ordinary run behind them. A worker takes jobs in queue order, so once that run
has finished the hostile jobs have been judged: no sleeping, and a worker that
died on them fails the test by never finishing the run.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.callbacks import Callback
from rq.job import Job, JobStatus

from producer.client import Client
from shared.jobs import JOB_FUNCTION
from tests.conftest import WorkerFactory

MODES = pytest.mark.parametrize("mode", ["fork", "simple"])
ONLY_RUN_PROMPT = f"only {JOB_FUNCTION} may run on a claude-queue worker"


def _follow_up_succeeds(client: Client) -> None:
    """A normal run submitted behind the hostile jobs: the worker is still working."""
    handle = client.submit(session_id="after-refusal", prompt="still working?")
    assert handle.wait(timeout_s=90).status == "succeeded"


def _refusal(queue: Queue, job_id: str) -> str:
    """The reason a refused job was failed with (asserting it is in the failed registry)."""
    assert job_id in queue.failed_job_registry.get_job_ids()
    # Nothing left behind that the reaper would hand to a worker again.
    assert job_id not in queue.intermediate_queue.get_job_ids()
    assert job_id not in queue.started_job_registry.get_job_ids(cleanup=False)
    assert job_id not in queue.get_job_ids()
    job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None
    assert result.exc_string is not None
    return result.exc_string


def _refused_log_lines(worker_log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in worker_log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == "job_refused":
            lines.append(record)
    return lines


def _canary(folder: Path, marker: Path) -> str:
    """A module that leaves `marker` behind when it is imported; returns its name."""
    folder.mkdir()
    (folder / "cq_canary.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "def touch(*args, **kwargs):\n    return 0\n"
    )
    return "cq_canary"


@MODES
def test_os_system_is_refused_and_the_worker_goes_on(
    client: Client, start_worker: WorkerFactory, tmp_path: Path, mode: str
) -> None:
    marker = tmp_path / "pwned"
    hostile = client.queue.enqueue_call("os.system", args=(f"id > {marker}",))
    start_worker("guarded", mode=mode)
    _follow_up_succeeds(client)

    assert not marker.exists()
    reason = _refusal(client.queue, hostile.id)
    assert "'os.system' is not allowed" in reason
    assert ONLY_RUN_PROMPT in reason
    (logged,) = _refused_log_lines(tmp_path / "guarded.log")
    assert logged["job_id"] == hostile.id
    assert logged["function"] == "'os.system'"
    assert logged["level"] == "error"


@MODES
def test_project_functions_other_than_run_prompt_are_refused(
    client: Client, start_worker: WorkerFactory, mode: str
) -> None:
    # Without the guard new_run_id would simply succeed; reap_all would run the reaper.
    new_run_id = client.queue.enqueue_call("shared.jobs.new_run_id")
    reap_all = client.queue.enqueue_call("worker.reaper.reap_all", args=(None, None, None))
    start_worker(mode=mode)
    _follow_up_succeeds(client)

    assert "'shared.jobs.new_run_id' is not allowed" in _refusal(client.queue, new_run_id.id)
    assert "'worker.reaper.reap_all' is not allowed" in _refusal(client.queue, reap_all.id)


@MODES
def test_a_refused_job_imports_nothing(
    client: Client, start_worker: WorkerFactory, tmp_path: Path, mode: str
) -> None:
    imported = tmp_path / "imported"
    module = _canary(tmp_path / "importable", imported)
    by_function = client.queue.enqueue_call(f"{module}.touch")
    # A failing run_prompt job would make RQ import and call its failure callback.
    by_callback = client.queue.enqueue_call(
        JOB_FUNCTION, args=("not a payload",), on_failure=Callback(f"{module}.touch")
    )
    start_worker(mode=mode, env={"PYTHONPATH": str(tmp_path / "importable")})
    _follow_up_succeeds(client)

    assert not imported.exists()
    assert f"'{module}.touch' is not allowed" in _refusal(client.queue, by_function.id)
    assert f"failure callback '{module}.touch'" in _refusal(client.queue, by_callback.id)


def test_an_instance_method_form_is_refused(
    client: Client, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    job = client.queue.enqueue_call(JOB_FUNCTION, args=("placeholder",))
    # What RQ stores for `enqueue_call(some_object.method)`: the instance and a bare
    # name. Unguarded, this one would finish with "TOUCH MARKER" as its result.
    data = json.dumps(["upper", "touch marker", [], {}]).encode()
    client.redis.hset(job.key, "data", zlib.compress(data))
    start_worker()
    _follow_up_succeeds(client)

    reason = _refusal(client.queue, job.id)
    assert "function 'upper' is called on an instance (str)" in reason
    assert ONLY_RUN_PROMPT in reason
    (logged,) = _refused_log_lines(tmp_path / "w0.log")
    assert logged["job_id"] == job.id
