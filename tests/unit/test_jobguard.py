"""The job guard: only a plain call of JOB_FUNCTION passes, and judging imports nothing."""

from __future__ import annotations

import json
import sys
import zlib

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.jobs import JOB_FUNCTION
from worker.jobguard import (
    GuardedJob,
    JobRefused,
    StoredCall,
    refusal_reason,
    shown_function,
    stored_call,
)

# Never used for a command: RQ's Job only insists on having one.
UNUSED_CONNECTION = redis.Redis(host="192.0.2.1")
# A stdlib module nothing in the test process imports: seeing it loaded means the guard imported.
UNIMPORTED = "tabnanny"


def _job(data: bytes, **hash_fields: bytes) -> GuardedJob:
    """A job as a worker fetches it: restored from its stored hash, nothing resolved yet."""
    job = GuardedJob("0" * 32, connection=UNUSED_CONNECTION, serializer=JSONSerializer)
    stored = {name.encode(): value for name, value in hash_fields.items()}
    job.restore({b"data": zlib.compress(data), **stored})
    return job


def _call(func_name: object, instance: object = None) -> bytes:
    return json.dumps([func_name, instance, [{"run_id": "r"}], {}]).encode()


def test_the_project_job_function_passes() -> None:
    assert refusal_reason(stored_call(_job(_call(JOB_FUNCTION)))) is None


@pytest.mark.parametrize(
    "func_name",
    ["os.system", "posix.system", "shared.jobs.new_run_id", "worker.reaper.reap_all",
     f" {JOB_FUNCTION}", f"{JOB_FUNCTION}.__globals__", "worker.job.run_prompt2", None, 42],
)  # fmt: skip
def test_any_other_function_is_refused_by_name(func_name: object) -> None:
    reason = refusal_reason(stored_call(_job(_call(func_name))))
    assert reason is not None
    assert repr(func_name) in reason
    assert f"only {JOB_FUNCTION} may run" in reason


@pytest.mark.parametrize("instance", ["id > /tmp/x", {"module": "worker.job"}, 0, []])
def test_an_instance_method_form_is_refused_even_with_the_right_name(instance: object) -> None:
    for func_name in (JOB_FUNCTION, "run_prompt", "upper"):
        reason = refusal_reason(stored_call(_job(_call(func_name, instance))))
        assert reason is not None
        assert f"on an instance ({type(instance).__name__})" in reason


@pytest.mark.parametrize("kind", ["success", "failure", "stopped"])
def test_a_callback_is_refused_because_rq_would_import_and_call_it(kind: str) -> None:
    job = _job(_call(JOB_FUNCTION), **{f"{kind}_callback_name": b"os.system"})
    reason = refusal_reason(stored_call(job))
    assert reason is not None
    assert f"{kind} callback 'os.system'" in reason


def test_webhooks_are_refused() -> None:
    hooks = [{"url": "http://169.254.169.254/", "job_status": "failed"}]
    job = _job(_call(JOB_FUNCTION), webhooks=json.dumps(hooks).encode())
    assert job.webhooks  # rq understood the stored hook
    reason = refusal_reason(stored_call(job))
    assert reason is not None
    assert "1 webhook" in reason


@pytest.mark.parametrize(
    "data",
    [b"\x80\x04\x95pickle", b"not json", b'["only", "three", []]', b"{}", b"\xff\xfe"],
)
def test_undecodable_data_is_refused(data: bytes) -> None:
    call = stored_call(_job(data))
    assert not call.decodable
    assert shown_function(call) == "<undecodable>"
    assert "cannot be decoded" in str(refusal_reason(call))


def test_a_huge_name_is_shortened_in_the_reason() -> None:
    reason = refusal_reason(StoredCall(decodable=True, func_name="x" * 100_000))
    assert reason is not None
    assert len(reason) < 400


def test_judging_and_resolving_a_refused_job_import_nothing() -> None:
    assert UNIMPORTED not in sys.modules
    job = _job(_call(f"{UNIMPORTED}.check"), failure_callback_name=f"{UNIMPORTED}.check".encode())
    assert refusal_reason(stored_call(job)) is not None
    with pytest.raises(JobRefused, match=f"'{UNIMPORTED}.check' is not allowed"):
        _ = job.func
    assert job.failure_callback is None
    assert job.success_callback is None
    assert job.stopped_callback is None
    assert UNIMPORTED not in sys.modules


def test_a_guarded_job_still_resolves_the_job_function() -> None:
    from worker.job import run_prompt

    assert _job(_call(JOB_FUNCTION)).func is run_prompt


def test_a_plain_rq_job_reads_the_same_without_resolving() -> None:
    """stored_call works on RQ's own Job class too (what other tooling fetches)."""
    job = Job("1" * 32, connection=UNUSED_CONNECTION, serializer=JSONSerializer)
    job.restore({b"data": zlib.compress(_call("os.system"))})
    call = stored_call(job)
    assert call == StoredCall(decodable=True, func_name="os.system")
