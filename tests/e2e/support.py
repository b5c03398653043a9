"""Helpers of the real-CLI tier: reading events, model requests, transcripts and /proc."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.client import RunHandle
from shared.events import Envelope, EventType

CLI_VERSION = "2.1.330"
STREAM_TIMEOUT_S = 90.0
RUN_MARKER = "CLAUDE_QUEUE_RUN_ID"


# -- events -----------------------------------------------------------------------


def run_events(handle: RunHandle) -> list[Envelope]:
    """Every event of the run, from `queued` to its one `finished`."""
    events = list(handle.stream(timeout_s=STREAM_TIMEOUT_S))
    assert events, "the run produced no event at all"
    assert events[-1].type is EventType.FINISHED, types(events)
    assert types(events).count(EventType.FINISHED) == 1, types(events)
    assert {e.run_id for e in events} == {handle.run_id}
    return events


def types(events: Iterable[Envelope]) -> list[EventType | str]:
    return [e.type for e in events]


def data_of(events: Iterable[Envelope], event_type: EventType) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type is event_type]


def one(events: Iterable[Envelope], event_type: EventType) -> dict[str, Any]:
    found = data_of(events, event_type)
    assert len(found) == 1, f"expected one {event_type.value}, got {len(found)}"
    return found[0]


def finished(events: list[Envelope]) -> dict[str, Any]:
    assert events[-1].type is EventType.FINISHED
    return events[-1].data


def blocks(events: Iterable[Envelope], block_type: str, role: str | None = None) -> list[Any]:
    """Content blocks of `block_type` in `message` events (of `role`, when given)."""
    return [
        block
        for data in data_of(events, EventType.MESSAGE)
        if role is None or data["role"] == role
        for block in data["content"]
        if block.get("type") == block_type
    ]


def assistant_texts(events: Iterable[Envelope]) -> list[str]:
    return [str(b["text"]) for b in blocks(events, "text", role="assistant")]


def errors(events: Iterable[Envelope]) -> list[dict[str, Any]]:
    return data_of(events, EventType.ERROR)


def error_codes(events: Iterable[Envelope]) -> list[str]:
    return [str(e["code"]) for e in errors(events)]


def claude_session_id(events: list[Envelope]) -> str:
    value = finished(events)["claude_session_id"]
    assert isinstance(value, str) and value, finished(events)
    return value


# -- what the fake model was sent ---------------------------------------------------


def user_texts(request: dict[str, Any]) -> list[str]:
    """The text of every user turn in a Messages API request body."""
    return sent_texts(request, "user")


def sent_texts(request: dict[str, Any], role: str) -> list[str]:
    """The text of every `role` turn in a Messages API request body."""
    texts: list[str] = []
    for message in request.get("messages", []):
        if message.get("role") != role:
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                str(b.get("text"))
                for b in content
                if isinstance(b, dict) and b.get("type") == "text"
            )
    return texts


# -- transcripts --------------------------------------------------------------------


def transcript_file(home: Path, cwd: Path, conversation_id: str) -> Path:
    """Where CLI 2.1.330 keeps a conversation: every non-alphanumeric of cwd becomes '-'."""
    slug = re.sub(r"[^A-Za-z0-9]", "-", str(cwd.resolve()))
    return home / ".claude" / "projects" / slug / f"{conversation_id}.jsonl"


# -- processes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    """A process identified by pid + start time, so a recycled pid is never mistaken for it."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return None if stat is None else cls(pid, stat[1])

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.start_ticks and stat[0] not in ("Z", "X")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    return fields[0], int(fields[19])


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def marked_processes(run_id: str) -> list[int]:
    """Live processes whose environment carries the run's CLAUDE_QUEUE_RUN_ID marker."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X") and marker in _environ(pid):
            found.append(pid)
    return found


# -- model requests: tool results -------------------------------------------------


def tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of a Messages API request body's last user turn."""
    messages = request.get("messages", [])
    users = [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


# -- processes: descendants -------------------------------------------------------


def children(pid: int) -> list[int]:
    """The live children of a process (every thread's), from /proc."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[Proc]:
    """Every live descendant of a process, each identified by pid + start time."""
    found: list[Proc] = []
    pending = children(pid)
    while pending:
        proc = Proc.of(pending.pop())
        if proc is not None and proc not in found:
            found.append(proc)
            pending.extend(children(proc.pid))
    return found
