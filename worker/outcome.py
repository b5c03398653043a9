"""Decide how a run ended, from what the CLI printed and how it exited. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.events import (
    ErrorCode,
    Event,
    EventType,
    FinishedData,
    InitData,
    InterruptedData,
    ResultData,
    RunStatus,
)
from shared.jobs import RetryableError
from worker.errors import error_event
from worker.retries import api_error_of


@dataclass(slots=True)
class RunObservations:
    """What the runner saw while reading the CLI; filled in as events pass by."""

    claude_session_id: str | None = None
    results: list[ResultData] = field(default_factory=list)
    cancel_reason: str | None = None
    timeout_reason: str | None = None
    # A failure of our own making (e.g. events could not be buffered): code and message.
    failure: tuple[ErrorCode, str] | None = None
    killed_after_result: bool = False
    # The CLI did not exit: it was kept warm, idle, for the session's next run.
    kept_warm: bool = False
    # The last retryable API error the CLI reported (after its own retries gave up).
    api_error: RetryableError | None = None

    def observe(self, event: Event) -> None:
        data = event.data
        api_error = api_error_of(event)
        if api_error is not None:
            self.api_error = api_error
        if isinstance(data, InitData) and data.claude_session_id:
            self.claude_session_id = data.claude_session_id
        elif isinstance(data, ResultData):
            self.results.append(data)
            if data.claude_session_id:
                self.claude_session_id = data.claude_session_id


def final_events(
    seen: RunObservations, *, exit_code: int | None, duration_s: float, stderr_tail: str
) -> tuple[list[Event], RunStatus]:
    """The closing events (ending with the one `finished`) and the run's status."""
    events: list[Event] = []
    reason: str | None = None
    if seen.cancel_reason is not None:
        status, reason = RunStatus.INTERRUPTED, seen.cancel_reason
        events.append(Event(type=EventType.INTERRUPTED, data=InterruptedData(reason=reason)))
    elif seen.failure is not None:
        status, reason = RunStatus.FAILED, seen.failure[1]
        events.append(error_event(*seen.failure))
    elif seen.timeout_reason is not None:
        status, reason = RunStatus.TIMED_OUT, seen.timeout_reason
        events.append(error_event(ErrorCode.TIMEOUT, reason))
    elif seen.results:
        last = seen.results[-1]
        clean_exit = exit_code == 0 or seen.killed_after_result or seen.kept_warm
        if last.is_error:
            status, reason = RunStatus.FAILED, "the CLI reported an error result"
        elif not clean_exit:
            status, reason = RunStatus.FAILED, f"the CLI exited with code {exit_code}"
            events.append(error_event(ErrorCode.CLI_EXIT, reason, stderr_tail=stderr_tail))
        else:
            status = RunStatus.SUCCEEDED
    elif exit_code != 0:
        status, reason = RunStatus.FAILED, f"the CLI exited with code {exit_code}"
        message = f"{reason}: {stderr_tail.strip()}" if stderr_tail.strip() else reason
        events.append(error_event(ErrorCode.CLI_EXIT, message, stderr_tail=stderr_tail))
    else:
        status, reason = RunStatus.FAILED, "the CLI exited without printing a result"
        events.append(error_event(ErrorCode.CLI_ERROR, reason, stderr_tail=stderr_tail))
    finished = FinishedData(
        status=status,
        exit_code=exit_code,
        duration_s=round(duration_s, 6),
        claude_session_id=seen.claude_session_id,
        reason=reason,
        stderr_tail=stderr_tail if status is RunStatus.FAILED and stderr_tail else None,
        kept_warm=seen.kept_warm,
    )
    events.append(Event(type=EventType.FINISHED, data=finished))
    return events, status
