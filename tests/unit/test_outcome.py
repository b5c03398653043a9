"""Unit tests for worker.outcome: how a run ended, from what the CLI printed and its exit."""

from __future__ import annotations

import pytest

from shared.events import (
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    FinishedData,
    InitData,
    InterruptedData,
    ResultData,
    RunStatus,
    TextData,
)
from worker.outcome import RunObservations, final_events

SESSION = "c96ee454-55b7-4912-add4-2cc5ac471d63"


def ok_result(session: str | None = SESSION) -> ResultData:
    return ResultData(subtype="success", is_error=False, result="done", claude_session_id=session)


def error_result() -> ResultData:
    return ResultData(subtype="error_max_turns", is_error=True, claude_session_id=SESSION)


def finish(
    seen: RunObservations,
    *,
    exit_code: int | None = 0,
    stderr_tail: str = "",
    duration_s: float = 1.5,
) -> tuple[list[Event], RunStatus, FinishedData]:
    events, status = final_events(
        seen, exit_code=exit_code, duration_s=duration_s, stderr_tail=stderr_tail
    )
    # exactly one finished, always last, agreeing with the returned status
    assert [e.type for e in events].count(EventType.FINISHED) == 1
    assert events[-1].type is EventType.FINISHED
    finished = events[-1].data
    assert isinstance(finished, FinishedData)
    assert finished.status is status
    assert finished.exit_code == exit_code
    return events, status, finished


def error_data(event: Event) -> ErrorData:
    assert event.type is EventType.ERROR
    assert isinstance(event.data, ErrorData)
    return event.data


def observed(*events: Event) -> RunObservations:
    seen = RunObservations()
    for event in events:
        seen.observe(event)
    return seen


# --------------------------------------------------------------------------- observe


def test_observe_tracks_session_id_and_results() -> None:
    seen = observed(
        Event(type=EventType.INIT, data=InitData(claude_session_id="from-init")),
        Event(type=EventType.TEXT, data=TextData(text="noise")),
        Event(type=EventType.RESULT, data=ok_result(session="from-result")),
    )
    assert seen.claude_session_id == "from-result"
    assert seen.results == [ok_result(session="from-result")]


def test_observe_keeps_session_id_when_result_has_none() -> None:
    seen = observed(
        Event(type=EventType.INIT, data=InitData(claude_session_id="from-init")),
        Event(type=EventType.RESULT, data=ok_result(session=None)),
    )
    assert seen.claude_session_id == "from-init"


# --------------------------------------------------------------------------- statuses


def test_cancel_gives_interrupted() -> None:
    seen = observed(Event(type=EventType.RESULT, data=ok_result()))
    seen.cancel_reason = "cancelled by request"
    events, status, finished = finish(seen, exit_code=-9)
    assert status is RunStatus.INTERRUPTED
    assert [e.type for e in events] == [EventType.INTERRUPTED, EventType.FINISHED]
    interrupted = events[0].data
    assert isinstance(interrupted, InterruptedData)
    assert interrupted.reason == "cancelled by request"
    assert finished.reason == "cancelled by request"
    assert finished.stderr_tail is None


def test_cancel_wins_over_timeout() -> None:
    seen = RunObservations(cancel_reason="stop", timeout_reason="too slow")
    _, status, _ = finish(seen, exit_code=-9)
    assert status is RunStatus.INTERRUPTED


def test_timeout_gives_error_and_timed_out() -> None:
    seen = RunObservations(timeout_reason="the run exceeded its time limit (timeout_s)")
    events, status, finished = finish(seen, exit_code=-9, stderr_tail="partial output")
    assert status is RunStatus.TIMED_OUT
    assert [e.type for e in events] == [EventType.ERROR, EventType.FINISHED]
    error = error_data(events[0])
    assert error.code is ErrorCode.TIMEOUT
    assert error.message == "the run exceeded its time limit (timeout_s)"
    assert finished.reason == error.message
    assert finished.stderr_tail is None  # only failed runs carry it


def test_last_result_error_gives_failed() -> None:
    seen = observed(
        Event(type=EventType.RESULT, data=ok_result()),
        Event(type=EventType.RESULT, data=error_result()),
    )
    events, status, finished = finish(seen, exit_code=1, stderr_tail="boom\n")
    assert status is RunStatus.FAILED
    # the parser already published the result's own error event: nothing more but finished
    assert [e.type for e in events] == [EventType.FINISHED]
    assert finished.reason == "the CLI reported an error result"
    assert finished.stderr_tail == "boom\n"
    assert finished.claude_session_id == SESSION


def test_error_result_with_exit_zero_is_still_failed() -> None:
    seen = observed(Event(type=EventType.RESULT, data=error_result()))
    _, status, _ = finish(seen, exit_code=0)
    assert status is RunStatus.FAILED


def test_later_success_after_error_result_succeeds() -> None:
    seen = observed(
        Event(type=EventType.RESULT, data=error_result()),
        Event(type=EventType.RESULT, data=ok_result()),
    )
    _, status, _ = finish(seen, exit_code=0)
    assert status is RunStatus.SUCCEEDED


def test_success_result_and_exit_zero_succeeds() -> None:
    seen = observed(
        Event(type=EventType.INIT, data=InitData(claude_session_id=SESSION)),
        Event(type=EventType.RESULT, data=ok_result()),
    )
    events, status, finished = finish(seen, exit_code=0, stderr_tail="harmless warning")
    assert status is RunStatus.SUCCEEDED
    assert [e.type for e in events] == [EventType.FINISHED]
    assert finished.reason is None
    assert finished.stderr_tail is None
    assert finished.claude_session_id == SESSION
    assert finished.duration_s == 1.5


def test_success_result_killed_after_result_succeeds() -> None:
    seen = observed(Event(type=EventType.RESULT, data=ok_result()))
    seen.killed_after_result = True
    events, status, _ = finish(seen, exit_code=-9)
    assert status is RunStatus.SUCCEEDED
    assert [e.type for e in events] == [EventType.FINISHED]


def test_success_result_but_nonzero_exit_fails() -> None:
    seen = observed(Event(type=EventType.RESULT, data=ok_result()))
    events, status, finished = finish(seen, exit_code=2, stderr_tail="crash after result")
    assert status is RunStatus.FAILED
    error = error_data(events[0])
    assert error.code is ErrorCode.CLI_EXIT
    assert "2" in error.message
    assert error.detail["stderr_tail"] == "crash after result"
    assert finished.stderr_tail == "crash after result"


def test_no_result_and_exit_code_gives_cli_exit_with_stderr() -> None:
    stderr = "Error: something exploded\n  at main.js:1\n"
    events, status, finished = finish(RunObservations(), exit_code=3, stderr_tail=stderr)
    assert status is RunStatus.FAILED
    assert [e.type for e in events] == [EventType.ERROR, EventType.FINISHED]
    error = error_data(events[0])
    assert error.code is ErrorCode.CLI_EXIT
    assert "code 3" in error.message
    assert stderr.strip() in error.message
    assert error.detail["stderr_tail"] == stderr
    assert finished.reason == "the CLI exited with code 3"
    assert finished.stderr_tail == stderr


def test_no_result_and_exit_code_without_stderr() -> None:
    events, status, finished = finish(RunObservations(), exit_code=127, stderr_tail="  \n")
    assert status is RunStatus.FAILED
    error = error_data(events[0])
    assert error.message == "the CLI exited with code 127"
    assert finished.stderr_tail == "  \n"


def test_no_result_and_exit_zero_still_fails() -> None:
    events, status, finished = finish(RunObservations(), exit_code=0)
    assert status is RunStatus.FAILED
    assert [e.type for e in events] == [EventType.ERROR, EventType.FINISHED]
    error = error_data(events[0])
    assert error.code is ErrorCode.CLI_ERROR
    assert "without printing a result" in error.message
    assert finished.reason == error.message
    assert finished.stderr_tail is None


def test_duration_is_rounded() -> None:
    _, _, finished = finish(observed(), exit_code=0, duration_s=1.123456789)
    assert finished.duration_s == 1.123457


@pytest.mark.parametrize(
    ("cancel", "timeout", "results", "killed", "exit_code"),
    [
        (c, t, r, k, e)
        for c in (None, "cancel")
        for t in (None, "timeout")
        for r in ((), (False,), (True,), (True, False), (False, True))
        for k in (False, True)
        for e in (None, 0, 1, -9)
    ],
)
def test_exactly_one_finished_always_last(
    cancel: str | None,
    timeout: str | None,
    results: tuple[bool, ...],
    killed: bool,
    exit_code: int | None,
) -> None:
    seen = RunObservations(cancel_reason=cancel, timeout_reason=timeout, killed_after_result=killed)
    for is_error in results:
        seen.observe(Event(type=EventType.RESULT, data=error_result() if is_error else ok_result()))
    events, status, _ = finish(seen, exit_code=exit_code, stderr_tail="tail")
    assert all(e.type is not EventType.FINISHED for e in events[:-1])
    assert len(events) <= 2
    if status is RunStatus.SUCCEEDED:
        assert results and results[-1] is False
        assert cancel is None and timeout is None
        assert exit_code == 0 or killed
    for event in events:
        event.data.model_dump_json()
