"""What a finished run amounts to: `RunHandle.result()`. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producer.errors import StreamEnded
from shared.blocks import TextBlock
from shared.events import (
    Envelope,
    ErrorData,
    EventType,
    FinishedData,
    InitData,
    MessageData,
    ResultData,
    RunStatus,
)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run: its answer, how it ended, what it cost."""

    session_id: str
    run_id: str
    status: RunStatus | str  # a str only for a status from a newer worker
    text: str  # the last `result` event's text, else the last assistant message's text
    total_cost_usd: float | None
    usage: dict[str, Any] | None
    duration_s: float
    num_turns: int | None
    claude_session_id: str | None
    errors: tuple[ErrorData, ...]
    finished: FinishedData

    @property
    def succeeded(self) -> bool:
        return self.status is RunStatus.SUCCEEDED


def stream_ended(run_id: str) -> StreamEnded:
    """The error of a run's stream that ended without the run's `finished` event."""
    return StreamEnded(f"the stream of run {run_id} ended before its finished event")


class ResultCollector:
    """Fed a run's stream, envelope by envelope; `result()` once `finished` has passed."""

    def __init__(self, session_id: str, run_id: str) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self._result: ResultData | None = None
        self._answer: MessageData | None = None  # the last top-level assistant message
        self._claude_session_id: str | None = None
        self._errors: list[ErrorData] = []
        self._finished: FinishedData | None = None

    def add(self, envelope: Envelope) -> None:
        """Take one envelope of the session (other runs' events are ignored)."""
        if envelope.run_id != self.run_id:
            return
        if envelope.type not in _TYPED:
            return
        try:
            data = envelope.typed_data()
        except ValidationError:  # a payload reshaped by a newer worker: not readable here
            return
        if isinstance(data, MessageData):
            if data.role == "assistant" and data.parent_tool_use_id is None:
                self._answer = data
        elif isinstance(data, ResultData):
            self._result = data
        elif isinstance(data, ErrorData):
            self._errors.append(data)
        elif isinstance(data, InitData):
            self._claude_session_id = data.claude_session_id or self._claude_session_id
        elif isinstance(data, FinishedData):
            self._finished = data

    @property
    def finished(self) -> FinishedData | None:
        return self._finished

    def result(self) -> RunResult:
        """The RunResult; StreamEnded if the run's `finished` event never came."""
        finished = self._finished
        if finished is None:
            raise stream_ended(self.run_id)
        result = self._result
        return RunResult(
            session_id=self.session_id,
            run_id=self.run_id,
            status=finished.status,
            text=self._text(),
            total_cost_usd=None if result is None else result.total_cost_usd,
            usage=None if result is None else result.usage,
            duration_s=finished.duration_s,
            num_turns=None if result is None else result.num_turns,
            claude_session_id=(
                finished.claude_session_id
                or (result and result.claude_session_id)
                or self._claude_session_id
            ),
            errors=tuple(self._errors),
            finished=finished,
        )

    def _text(self) -> str:
        if self._result is not None and self._result.result is not None:
            return self._result.result
        if self._answer is None:
            return ""
        return "".join(block.text for block in self._answer.content if isinstance(block, TextBlock))


_TYPED = frozenset(
    {EventType.MESSAGE, EventType.RESULT, EventType.ERROR, EventType.INIT, EventType.FINISHED}
)
