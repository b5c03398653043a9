"""A run's envelopes as a person reads them (rich): one handler per event type.

Strings from the model, the CLI or Redis only ever reach rich as `Text` or `Markdown`,
never as markup. The verbosity decides how much is shown (`--quiet`: the final answer
only; `--verbose`: every event in full), the console whether it is a terminal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.text import Text

from producer.approvals import expires_in_s
from producer.render_blocks import BlockRenderer, Verbosity
from producer.render_text import (
    clock,
    cost,
    duration,
    moment,
    one_line,
    plural,
    short,
    token_count,
    tokens_in_out,
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
    WaitingData,
)

__all__ = ["Renderer", "Verbosity"]

# A person decides on a permission request from this: show more of its input.
_REQUEST_INPUT_PREVIEW = 2000
_PROMPT_LINE_CHARS = 100

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


def _meta(ts: float, *parts: str) -> Text:
    """A dim line about the run, stamped with the event's time: `14:03:22 · started on w1`."""
    return Text(f"{clock(ts)} · {' · '.join(part for part in parts if part)}", style="dim")


class Renderer:
    """Prints one envelope at a time; remembers whether text was already streamed."""

    def __init__(
        self,
        console: Console,
        clock: Callable[[], float] = time.time,
        *,
        verbosity: Verbosity = Verbosity.NORMAL,
        errors: Console | None = None,
    ) -> None:
        self.console = console
        self.errors = errors or console  # where --quiet still says what went wrong
        self.verbosity = verbosity
        self.blocks = BlockRenderer(verbosity, terminal=console.is_terminal)
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
            WaitingData: self._on_waiting,
        }

    @property
    def quiet(self) -> bool:
        return self.verbosity <= Verbosity.QUIET

    @property
    def verbose(self) -> bool:
        return self.verbosity >= Verbosity.VERBOSE

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

    def _print(self, renderable: RenderableType) -> None:
        if not self.quiet:
            self.console.print(renderable)

    def _generic(self, envelope: Envelope) -> None:
        """One line for an event this renderer cannot show in detail."""
        payload = short(json.dumps(envelope.data, ensure_ascii=False, default=str), 200)
        self._print(Text(f"· {envelope.type} {payload}", style="dim"))

    def _on_queued(self, data: QueuedData, env: Envelope) -> None:
        prompt = data.prompt or ""
        asked = prompt if self.verbose else one_line(prompt, _PROMPT_LINE_CHARS)
        model = f"model {data.model}" if data.model else ""
        self._print(_meta(env.ts, f"queued run {env.run_id[:8]}", f"profile {data.profile}", model))
        if asked:
            self._print(Text.assemble(("> ", "bold"), (asked, "bold")))
        if self.verbose and data.metadata:
            self._print(Text(f"  metadata {json.dumps(data.metadata)}", style="dim"))

    def _on_waiting(self, data: WaitingData, env: Envelope) -> None:
        held = data.reason.replace("_", " ")
        self._print(_meta(env.ts, f"waiting: {held}", f"limit {data.key}" if data.key else ""))

    def _on_started(self, data: StartedData, env: Envelope) -> None:
        how = "warm CLI" if data.warm else "new CLI"
        why = f" (cold: {data.cold_reason})" if data.cold_reason else ""
        self._print(_meta(env.ts, f"started on {data.worker}", f"host {data.host}", how + why))
        if self.verbose:
            self._print(Text(f"  CLI pid {data.pid}", style="dim"))

    def _on_init(self, data: InitData, env: Envelope) -> None:
        claude = f"claude {data.cli_version}" if data.cli_version else "claude"
        model = f"model {data.model}" if data.model else ""
        self._print(_meta(env.ts, claude, model))
        if self.verbose:
            self._print(
                Text(
                    f"  session {data.claude_session_id or '-'} · cwd {data.cwd or '-'} · "
                    f"permission mode {data.permission_mode or '-'} · "
                    f"tools {', '.join(data.tools) or '-'}",
                    style="dim",
                )
            )

    def _on_stream_event(self, data: StreamEventData, _env: Envelope) -> None:
        text = data.text_delta
        if text is not None and not self.quiet:
            self.console.print(Text(text), end="")
            self._streamed_text = True

    def _on_message(self, data: MessageData, _env: Envelope) -> None:
        streamed, self._streamed_text = self._streamed_text, False
        if streamed:
            self._print(Text())
        for block in data.content:
            if streamed and block.type == "text":
                continue  # its deltas were printed as they came
            shown = self.blocks.block(block)
            if shown is not None:
                self._print(shown)
        counts = tokens_in_out(data.usage)
        if self.verbose and counts is not None:
            taken, given = counts
            self._print(Text(f"  tokens {token_count(taken)} in, {token_count(given)} out", "dim"))

    def _on_result(self, data: ResultData, env: Envelope) -> None:
        if self.quiet:
            if data.result and not data.is_error:
                self.console.print(data.result, markup=False, highlight=False)
            elif data.result:
                self.errors.print(Text(f"error: {data.result}"))
            return
        turns = data.num_turns
        parts = [plural(turns, "turn") if turns is not None else ""]
        counts = tokens_in_out(data.usage)
        if counts is not None:
            parts.append(f"tokens {token_count(counts[0])} in / {token_count(counts[1])} out")
        if data.total_cost_usd is not None:
            per_turn = f" ({cost(data.total_cost_usd / turns)}/turn)" if turns and turns > 1 else ""
            parts.append(f"cost {cost(data.total_cost_usd)}{per_turn}")
        if data.duration_ms is not None:
            parts.append(f"took {duration(data.duration_ms / 1000)}")
        verdict = "result: error" if data.is_error else "result: ok"
        line = _meta(env.ts, verdict, *parts)
        if data.is_error:
            line.stylize("red")
        self._print(line)
        if data.is_error and data.result:
            self._print(Text(short(data.result, 2000), style="red"))

    def _on_error(self, data: ErrorData, _env: Envelope) -> None:
        line = Text.assemble(
            ("error", "bold red"), (f" ({data.code})", "red"), ": ", short(data.message, 2000)
        )
        (self.errors if self.quiet else self.console).print(line)

    def _on_text(self, data: TextData, _env: Envelope) -> None:
        self._print(Text(data.text))

    def _on_rate_limit(self, data: RateLimitData, _env: Envelope) -> None:
        when = f", resets {moment(data.resets_at, self._clock())}" if data.resets_at else ""
        kind = f" {data.limit_type}" if data.limit_type else ""
        self._print(Text(f"rate limited{kind} ({data.status}){when}", style="yellow"))

    def _on_retry(self, data: RetryData, _env: Envelope) -> None:
        status = f"{data.error_status} " if data.error_status is not None else ""
        attempt = f"retry {data.attempt or '?'}/{data.max_retries or '?'}"
        delay = (
            f" in {duration(data.retry_delay_ms / 1000)}" if data.retry_delay_ms is not None else ""
        )
        self._print(
            Text(
                f"model request failed ({status}{data.error or 'no detail'}); {attempt}{delay}",
                style="yellow",
            )
        )

    def _on_interrupted(self, data: InterruptedData, _env: Envelope) -> None:
        self._print(Text(f"interrupted: {data.reason}", style="yellow"))

    def _on_permission_request(self, data: PermissionRequestData, _env: Envelope) -> None:
        line = Text.assemble(("? permission", "bold magenta"), " ", (data.tool_name, "cyan"))
        if data.description:
            line.append(f" — {data.description}")
        tool_input = json.dumps(data.input, ensure_ascii=False, default=str)
        left = expires_in_s(data.expires_at, self._clock())
        expiry = f"expires in {left} s" if left > 0 else "expired"
        # Asked even under --quiet: the run waits for this answer.
        (self.errors if self.quiet else self.console).print(line)
        self._print(Text(f"  input {short(tool_input, _REQUEST_INPUT_PREVIEW)}"))
        self._print(Text(f"  request {data.request_id} · {expiry}", style="dim"))

    def _on_permission_decision(self, data: PermissionDecisionData, _env: Envelope) -> None:
        allowed = data.behavior == "allow"
        mark, style = ("✓ allowed", "green") if allowed else ("✗ denied", "red")
        by = f" by {data.decided_by}" if data.decided_by else ""
        reason = (
            _REASON_TEXT[data.reason]
            if isinstance(data.reason, DecisionReason)
            else str(data.reason)  # a newer worker's reason, as it came
        )
        line = Text.assemble(
            (mark, style), f" request {data.request_id}{by} ", (f"({reason})", "dim")
        )
        if data.message:
            line.append(f": {short(data.message, 500)}")
        self._print(line)

    def _on_finished(self, data: FinishedData, env: Envelope) -> None:
        known = data.known_status
        style = _STATUS_STYLE.get(known, "bold") if known is not None else "bold"
        if data.kept_warm:
            ended = "CLI kept warm"  # it did not exit: the session's next run may use it
        elif data.exit_code is not None and (data.exit_code != 0 or self.verbose):
            ended = f"exit code {data.exit_code}"
        else:
            ended = ""  # exited 0, never started, or its worker was gone
        line = Text.assemble(
            (f"{clock(env.ts)} ", "dim"),
            (f"■ run {env.run_id[:8]} {data.status}", style),
            (f" in {duration(data.duration_s)}", "dim"),
        )
        if ended:
            line.append(f" · {ended}", style="dim")
        if data.reason:
            line.append(f" — {data.reason}")
        if self.quiet:
            if known is not RunStatus.SUCCEEDED:
                self.errors.print(line)
            return
        self.console.print(line)
        if data.stderr_tail and (self.verbose or known is not RunStatus.SUCCEEDED):
            self.console.print(Text(short(data.stderr_tail, 2000), style="dim red"))
