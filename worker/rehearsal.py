"""A spare work horse's rehearsal: the pure first steps of a run, on made-up data.

A forked horse copies each page of the worker's memory it writes to, reference counts
included, on first write (~5 us a page here). A spare (worker/spare.py) that runs the
steps every run starts with (validating a job payload, building the CLI's command and
environment, encoding an event, parsing the CLI's first line) has copied most of the
pages those steps touch before its job comes, while the worker waits. Nothing here
does I/O, writes a file or talks to Redis; what it builds is dropped.
"""

from __future__ import annotations

import os
import tempfile
import time

from shared.encode import encode_body
from shared.events import Event, EventType, StartedData
from shared.jobs import PromptJob, RunRequest, new_run_id
from worker.command import build_command
from worker.context import WorkerContext
from worker.parser import parse_line

_INIT_LINE = (
    b'{"type":"system","subtype":"init","session_id":"00000000-0000-4000-8000-000000000000",'
    b'"model":"rehearsal","tools":[],"cwd":"/"}'
)


def rehearse(ctx: WorkerContext) -> None:
    """Run the pure steps of a run's start once (a spare ignores any error here)."""
    job = PromptJob(session_id="rehearsal", prompt="rehearsal")
    payload = RunRequest(run_id=new_run_id(), submitted_at=time.time(), job=job).model_dump(
        mode="json"
    )
    request = RunRequest.model_validate(payload)  # as worker/job.py reads a payload
    build_command(  # builds the CLI's environment too, as the runner does
        request,
        ctx.settings,
        worker_name=ctx.worker_name,
        base_env=os.environ,
        cwd=os.path.realpath(tempfile.gettempdir()),
    )
    started = Event(
        type=EventType.STARTED,
        data=StartedData(worker=ctx.worker_name, host=ctx.host, pid=os.getpid()),
    )
    encode_body(job.session_id, request.run_id, time.time(), started)
    parse_line(_INIT_LINE)
