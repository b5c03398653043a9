"""Human-readable rendering of envelopes for the terminal (rich)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from shared.events import Envelope

_PREVIEW = 400

_STATUS_STYLE = {
    "succeeded": "bold green",
    "failed": "bold red",
    "interrupted": "bold yellow",
    "timed_out": "bold red",
    "lost": "bold red",
}


def _short(text: str, limit: int = _PREVIEW) -> str:
    return text if len(text) <= limit else text[:limit] + f"… (+{len(text) - limit} chars)"


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [c.get("text", "") for c in content if isinstance(c, dict)]
        return "\n".join(p for p in parts if p)
    return "" if content is None else json.dumps(content)


class Renderer:
    """Prints one envelope at a time; remembers whether text was already streamed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._streamed_text = False

    def show(self, envelope: Envelope) -> None:
        # Only a known type picks a handler: a newer worker's type name never selects a method.
        handler = getattr(self, f"_on_{envelope.type}", None) if envelope.is_known_type else None
        if handler is None:
            self._generic(envelope)
            return
        try:
            handler(envelope.data, envelope)
        except (AttributeError, KeyError, TypeError, ValueError):
            # A newer worker reshaped a known payload: show it plainly rather than end the tail.
            self._generic(envelope)

    def _generic(self, envelope: Envelope) -> None:
        """One line for an event this renderer cannot show in detail."""
        payload = _short(json.dumps(envelope.data, ensure_ascii=False, default=str), 200)
        self._dim(f"· {envelope.type} {payload}")

    def _dim(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/dim]")

    def _on_queued(self, data: dict[str, Any], env: Envelope) -> None:
        self._dim(f"· queued run {env.run_id[:8]} (profile {data.get('profile')})")

    def _on_started(self, data: dict[str, Any], _env: Envelope) -> None:
        self._dim(
            f"· started on {data.get('worker')} (host {data.get('host')}, pid {data.get('pid')})"
        )

    def _on_init(self, data: dict[str, Any], _env: Envelope) -> None:
        self._dim(
            f"· claude {data.get('cli_version') or ''} session {data.get('claude_session_id')} "
            f"model {data.get('model')}"
        )

    def _on_stream_event(self, data: dict[str, Any], _env: Envelope) -> None:
        event = data.get("event") or {}
        delta = event.get("delta") or {}
        if event.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
            self.console.print(escape(str(delta.get("text", ""))), end="")
            self._streamed_text = True

    def _on_message(self, data: dict[str, Any], _env: Envelope) -> None:
        streamed, self._streamed_text = self._streamed_text, False
        if streamed:
            self.console.print()
        for block in data.get("content") or []:
            self._block(block, skip_text=streamed)

    def _block(self, block: dict[str, Any], *, skip_text: bool) -> None:
        kind = block.get("type")
        if kind == "text" and not skip_text:
            self.console.print(escape(str(block.get("text", ""))))
        elif kind == "thinking":
            thinking = _short(str(block.get("thinking", "")))
            self.console.print(f"[italic dim]thinking: {escape(thinking)}[/]")
        elif kind in ("tool_use", "server_tool_use"):
            tool_input = json.dumps(block.get("input", {}), ensure_ascii=False)
            self.console.print(
                f"[cyan]→ {escape(str(block.get('name')))}[/cyan] {escape(_short(tool_input))}"
            )
        elif kind == "tool_result":
            style = "red" if block.get("is_error") else "dim"
            text = _short(_tool_result_text(block.get("content")))
            self.console.print(f"[{style}]← {escape(text)}[/{style}]")
        elif kind not in ("text", "redacted_thinking"):
            self._dim(f"[{kind} block]")

    def _on_result(self, data: dict[str, Any], _env: Envelope) -> None:
        cost = data.get("total_cost_usd")
        cost_text = f", cost ${cost:.4f}" if isinstance(cost, int | float) else ""
        verdict = "error" if data.get("is_error") else "ok"
        self._dim(f"· result {verdict}: {data.get('num_turns')} turns{cost_text}")

    def _on_error(self, data: dict[str, Any], _env: Envelope) -> None:
        message = escape(_short(str(data.get("message")), 2000))
        self.console.print(f"[bold red]error[/] [red]({data.get('code')})[/red]: {message}")

    def _on_text(self, data: dict[str, Any], _env: Envelope) -> None:
        self.console.print(escape(str(data.get("text", ""))))

    def _on_rate_limit(self, data: dict[str, Any], _env: Envelope) -> None:
        self.console.print(
            f"[yellow]rate limited ({escape(str(data.get('status')))}), "
            f"resets at {data.get('resets_at')}[/yellow]"
        )

    def _on_retry(self, data: dict[str, Any], _env: Envelope) -> None:
        self.console.print(
            f"[yellow]model request failed ({escape(str(data.get('error_status')))} "
            f"{escape(str(data.get('error')))}); retry {data.get('attempt')}/"
            f"{data.get('max_retries')} in {data.get('retry_delay_ms')} ms[/yellow]"
        )

    def _on_interrupted(self, data: dict[str, Any], _env: Envelope) -> None:
        self.console.print(f"[yellow]interrupted: {escape(str(data.get('reason')))}[/yellow]")

    def _on_finished(self, data: dict[str, Any], env: Envelope) -> None:
        status = str(data.get("status"))
        style = _STATUS_STYLE.get(status, "bold")
        reason = f" — {escape(str(data['reason']))}" if data.get("reason") else ""
        self.console.print(
            f"[{style}]■ run {env.run_id[:8]} {status}[/{style}] "
            f"[dim]in {data.get('duration_s', 0):.2f}s, exit {data.get('exit_code')}[/dim]{reason}"
        )
