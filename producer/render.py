"""Human-readable rendering of envelopes for the terminal (rich)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from producer.approvals import expires_in_s
from shared.blocks import (
    ContentBlock,
    RedactedThinkingBlock,
    ServerToolUseBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from shared.events import (
    DecisionReason,
    Envelope,
    ErrorData,
    EventData,
    FinishedData,
    InitData,
    InterruptedData,
    MessageData,
    PermissionDecisionData,
    PermissionRequestData,
    QueuedData,
    RateLimitData,
    ResultData,
    RetryData,
    RunStatus,
    StartedData,
    StreamEventData,
    TextData,
)

_PREVIEW = 400
# A person decides on a permission request from this: show more of its input.
_REQUEST_INPUT_PREVIEW = 2000

_REASON_TEXT = {
    DecisionReason.ANSWERED: "answered",
    DecisionReason.TIMED_OUT: "nobody answered in time",
    DecisionReason.RUN_ENDED: "the run ended first",
}

_STATUS_STYLE = {
    RunStatus.SUCCEEDED: "bold green",
    RunStatus.FAILED: "bold red",
    RunStatus.INTERRUPTED: "bold yellow",
    RunStatus.TIMED_OUT: "bold red",
    RunStatus.LOST: "bold red",
}


def _short(text: str, limit: int = _PREVIEW) -> str:
    return text if len(text) <= limit else text[:limit] + f"… (+{len(text) - limit} chars)"


def _tool_result_text(content: str | list[Any] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:  # the API's content parts, verbatim: matched by shape
        match part:
            case {"text": str(text)} if text:
                parts.append(text)
    return "\n".join(parts)


class Renderer:
    """Prints one envelope at a time; remembers whether text was already streamed."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.time) -> None:
        self.console = console
        self._clock = clock
        self._streamed_text = False
        # Dispatch on the payload's model: a newer worker's type is UnknownEventData,
        # which has no entry, so it can never select a handler by its name.
        self._handlers: dict[type[EventData], Callable[[Any, Envelope], None]] = {
            QueuedData: self._on_queued,
            StartedData: self._on_started,
            InitData: self._on_init,
            StreamEventData: self._on_stream_event,
            MessageData: self._on_message,
            ResultData: self._on_result,
            ErrorData: self._on_error,
            TextData: self._on_text,
            RateLimitData: self._on_rate_limit,
            RetryData: self._on_retry,
            InterruptedData: self._on_interrupted,
            PermissionRequestData: self._on_permission_request,
            PermissionDecisionData: self._on_permission_decision,
            FinishedData: self._on_finished,
        }

    def show(self, envelope: Envelope) -> None:
        try:
            data = envelope.typed_data()
        except ValidationError:
            # A newer worker reshaped a known payload: show it plainly rather than end the tail.
            self._generic(envelope)
            return
        handler = self._handlers.get(type(data))
        if handler is None:
            self._generic(envelope)
        else:
            handler(data, envelope)

    def _generic(self, envelope: Envelope) -> None:
        """One line for an event this renderer cannot show in detail."""
        payload = _short(json.dumps(envelope.data, ensure_ascii=False, default=str), 200)
        self._dim(f"· {envelope.type} {payload}")

    def _dim(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/dim]")

    def _on_queued(self, data: QueuedData, env: Envelope) -> None:
        self._dim(f"· queued run {env.run_id[:8]} (profile {data.profile})")

    def _on_started(self, data: StartedData, _env: Envelope) -> None:
        how = "warm CLI" if data.warm else "new CLI"
        why = f", cold: {data.cold_reason}" if data.cold_reason else ""
        self._dim(f"· started on {data.worker} (host {data.host}, {how} pid {data.pid}{why})")

    def _on_init(self, data: InitData, _env: Envelope) -> None:
        self._dim(
            f"· claude {data.cli_version or ''} session {data.claude_session_id} model {data.model}"
        )

    def _on_stream_event(self, data: StreamEventData, _env: Envelope) -> None:
        text = data.text_delta
        if text is not None:
            self.console.print(escape(text), end="")
            self._streamed_text = True

    def _on_message(self, data: MessageData, _env: Envelope) -> None:
        streamed, self._streamed_text = self._streamed_text, False
        if streamed:
            self.console.print()
        for block in data.content:
            self._block(block, skip_text=streamed)

    def _block(self, block: ContentBlock, *, skip_text: bool) -> None:
        if isinstance(block, TextBlock):
            if not skip_text:
                self.console.print(escape(block.text))
        elif isinstance(block, ThinkingBlock):
            self.console.print(f"[italic dim]thinking: {escape(_short(block.thinking))}[/]")
        elif isinstance(block, ToolUseBlock | ServerToolUseBlock):
            tool_input = json.dumps(block.input, ensure_ascii=False)
            self.console.print(f"[cyan]→ {escape(block.name)}[/cyan] {escape(_short(tool_input))}")
        elif isinstance(block, ToolResultBlock):
            style = "red" if block.is_error else "dim"
            text = _short(_tool_result_text(block.content))
            self.console.print(f"[{style}]← {escape(text)}[/{style}]")
        elif not isinstance(block, RedactedThinkingBlock):
            self._dim(f"[{block.type} block]")

    def _on_result(self, data: ResultData, _env: Envelope) -> None:
        cost = data.total_cost_usd
        cost_text = f", cost ${cost:.4f}" if cost is not None else ""
        verdict = "error" if data.is_error else "ok"
        self._dim(f"· result {verdict}: {data.num_turns} turns{cost_text}")

    def _on_error(self, data: ErrorData, _env: Envelope) -> None:
        message = escape(_short(data.message, 2000))
        self.console.print(f"[bold red]error[/] [red]({escape(data.code)})[/red]: {message}")

    def _on_text(self, data: TextData, _env: Envelope) -> None:
        self.console.print(escape(data.text))

    def _on_rate_limit(self, data: RateLimitData, _env: Envelope) -> None:
        self.console.print(
            f"[yellow]rate limited ({escape(data.status)}), resets at {data.resets_at}[/yellow]"
        )

    def _on_retry(self, data: RetryData, _env: Envelope) -> None:
        self.console.print(
            f"[yellow]model request failed ({data.error_status} "
            f"{escape(str(data.error))}); retry {data.attempt}/"
            f"{data.max_retries} in {data.retry_delay_ms} ms[/yellow]"
        )

    def _on_interrupted(self, data: InterruptedData, _env: Envelope) -> None:
        self.console.print(f"[yellow]interrupted: {escape(data.reason)}[/yellow]")

    def _on_permission_request(self, data: PermissionRequestData, _env: Envelope) -> None:
        description = f" — {escape(data.description)}" if data.description else ""
        self.console.print(
            f"[bold magenta]? permission[/] [cyan]{escape(data.tool_name)}[/cyan]{description}"
        )
        tool_input = json.dumps(data.input, ensure_ascii=False, default=str)
        self.console.print(f"  input {escape(_short(tool_input, _REQUEST_INPUT_PREVIEW))}")
        left = expires_in_s(data.expires_at, self._clock())
        expiry = f"expires in {left} s" if left > 0 else "expired"
        self._dim(f"  request {data.request_id} · {expiry}")

    def _on_permission_decision(self, data: PermissionDecisionData, _env: Envelope) -> None:
        allowed = data.behavior == "allow"
        mark, style = ("✓ allowed", "green") if allowed else ("✗ denied", "red")
        by = f" by {escape(data.decided_by)}" if data.decided_by else ""
        reason = (
            _REASON_TEXT[data.reason]
            if isinstance(data.reason, DecisionReason)
            else str(data.reason)  # a newer worker's reason, as it came
        )
        message = f": {escape(_short(data.message, 500))}" if data.message else ""
        self.console.print(
            f"[{style}]{mark}[/{style}] request {escape(data.request_id)}{by} "
            f"[dim]({escape(reason)})[/dim]{message}"
        )

    def _on_finished(self, data: FinishedData, env: Envelope) -> None:
        known = data.known_status
        style = _STATUS_STYLE.get(known, "bold") if known is not None else "bold"
        reason = f" — {escape(data.reason)}" if data.reason else ""
        if data.kept_warm:
            ended = ", CLI kept warm"  # it did not exit: the session's next run may use it
        elif data.exit_code is not None:
            ended = f", exit {data.exit_code}"
        else:
            ended = ""  # it never started, or its worker was gone
        self.console.print(
            f"[{style}]■ run {env.run_id[:8]} {escape(data.status)}[/{style}] "
            f"[dim]in {data.duration_s:.2f}s{ended}[/dim]{reason}"
        )
