"""The scripts the fake Anthropic API plays (devtools/fake_anthropic.py): turn types,
helpers that build them, and the named scenarios."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

JSON = dict[str, Any]

MIB: Final = 1024 * 1024
DEFAULT_TEXT: Final = "OK (fake default answer: the script is exhausted)."
SIDE_CALL_TEXT: Final = "Offline session"
FAKE_SIGNATURE: Final = "ZmFrZS1zaWduYXR1cmUtZm9yLW9mZmxpbmUtdGVzdHM="

# The Messages API names one error type per status; the CLI keys its retry and
# "login" logic off the status, the text is what users end up seeing.
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# --------------------------------------------------------------------------- script turns


@dataclass(frozen=True)
class TextTurn:
    """A plain text answer, optionally streamed in ``chunks`` deltas ``delay`` seconds apart."""

    text: str
    chunks: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class ThinkingTurn:
    """An extended-thinking block (with signature) followed by a text answer."""

    thinking: str
    text: str
    signature: str = FAKE_SIGNATURE
    chunks: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class ToolUseTurn:
    """A tool call; the CLI runs the tool and the *next* turn answers its tool_result."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""  # optional text block emitted before the tool_use block
    tool_use_id: str = ""  # generated when empty


@dataclass(frozen=True)
class ErrorTurn:
    """An HTTP error with an Anthropic error body, served ``times`` times in a row.

    ``times`` > 1 matters because the CLI retries 429/5xx: each retry consumes one serving.
    """

    status: int
    message: str = "Fake error injected by the test script."
    times: int = 1
    retry_after: int | None = None

    @property
    def error_type(self) -> str:
        return ERROR_TYPES.get(self.status, "api_error")


Turn = TextTurn | ThinkingTurn | ToolUseTurn | ErrorTurn


def bash_turn(command: str, description: str = "Run a command") -> ToolUseTurn:
    return ToolUseTurn("Bash", {"command": command, "description": description})


def big_text_turn(nbytes: int = MIB, chunks: int = 64) -> TextTurn:
    # Lines of 64 chars keep the payload realistic while still producing one huge JSON line
    # in the CLI's stream-json output (newlines are escaped there).
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
    text = (line * (nbytes // len(line) + 1))[:nbytes]
    return TextTurn(text, chunks=chunks)


def slow_text_turn(text: str, chunks: int = 10, delay: float = 0.5) -> TextTurn:
    return TextTurn(text, chunks=chunks, delay=delay)


def error_turn(status: int, times: int = 1) -> ErrorTurn:
    return ErrorTurn(status, f"Fake HTTP {status} injected by the test script.", times=times)


def _error_scenario(status: int) -> Callable[[], list[Turn]]:
    # Sticky error (served many times) so the CLI's retries keep failing.
    return lambda: [error_turn(status, times=100)]


# Named scenarios: small scripts shared by the CLI entry point and devtools.capture.
SCENARIOS: Final[Mapping[str, Callable[[], list[Turn]]]] = {
    "demo": lambda: [
        bash_turn("echo hello from the tool", "Print a greeting"),
        TextTurn(
            "This is an offline demo: the answer comes from a fake Anthropic API, and the "
            "Bash tool just ran `echo hello from the tool` on your machine.",
            chunks=6,
            delay=0.05,
        ),
    ],
    "text": lambda: [TextTurn("Hello from the fake API.", chunks=3)],
    "thinking": lambda: [
        ThinkingTurn("The user wants a greeting. Keep it short.", "Hi there!", chunks=2)
    ],
    "bash": lambda: [bash_turn("echo hello from the tool"), TextTurn("The tool printed hello.")],
    # A bare `sleep N` is refused by the CLI ("Blocked: standalone sleep"), so chain it.
    "sleep": lambda: [
        bash_turn("echo waiting && sleep 30 && echo done", "Wait"),
        TextTurn("Done."),
    ],
    "big": lambda: [big_text_turn()],
    "slow": lambda: [slow_text_turn("one two three four five six", chunks=6, delay=0.5)],
    **{f"error-{status}": _error_scenario(status) for status in (400, 401, 429, 500, 529)},
}
