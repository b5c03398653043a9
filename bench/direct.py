"""Baselines: the CLI run as a local subprocess and read in-process, no queue.

This is what the original in-process provider did. The parse baselines import
`worker.parser.parse_line`, the project's own pure line parser, so that the
baseline does the same parsing work the worker does (nothing else of the worker
is used).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from worker.parser import parse_line

CONTENT_TYPES = frozenset({"message", "stream_event"})
_READ_CHUNK = 1 << 20


def stamp_ns(text: str) -> int | None:
    """The `time.monotonic_ns()` a `FAKE: many` event carries (`t=<ns>;i=<i>;...`)."""
    if not text.startswith("t="):
        return None
    end = text.find(";")
    return int(text[2:end]) if end > 2 else None


def first_text(content: Any) -> str:
    """Text of the first content block of a message (or "")."""
    if isinstance(content, list) and content and isinstance(content[0], dict):
        text = content[0].get("text")
        return text if isinstance(text, str) else ""
    return ""


def latency_ms(text: str, now_ns: int) -> float | None:
    stamp = stamp_ns(text)
    return None if stamp is None else (now_ns - stamp) / 1e6


async def _read_latencies(
    argv: list[str], env: dict[str, str], cwd: Path, prompt: str
) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        limit=16 * _READ_CHUNK,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(procs.prompt_line(prompt))
    await proc.stdin.drain()
    proc.stdin.close()
    out: list[float] = []
    while line := await proc.stdout.readline():
        now = time.monotonic_ns()
        obj = json.loads(line)
        if obj.get("type") == "assistant":
            value = latency_ms(first_text(obj["message"]["content"]), now)
            if value is not None:
                out.append(value)
    if await proc.wait() != 0:
        raise RuntimeError(f"direct CLI run failed with exit code {proc.returncode}")
    return out


def asyncio_latencies(argv: list[str], env: dict[str, str], cwd: Path, prompt: str) -> list[float]:
    """Write -> read latency (ms) of each stamped line, read by an asyncio reader."""
    return asyncio.run(_read_latencies(argv, env, cwd, prompt))


@dataclass(slots=True)
class ParsedRun:
    """What a direct read + parse of one CLI run saw."""

    events: int = 0  # events from the first content event to the last one, inclusive
    first_s: float = 0.0
    last_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        span = self.last_s - self.first_s
        return (self.events - 1) / span if span > 0 else 0.0


def parse_run(argv: list[str], env: dict[str, str], cwd: Path, prompt: str) -> ParsedRun:
    """Run the CLI, read its stdout in big chunks and parse every line in-process."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(procs.prompt_line(prompt))
    proc.stdin.close()
    run = ParsedRun()
    rest = b""
    fd = proc.stdout.fileno()
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                _take(run, line)
        if rest:
            _take(run, rest)
    finally:
        proc.stdout.close()
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"direct CLI run failed with exit code {code}")
    return run


def _take(run: ParsedRun, line: bytes) -> None:
    now_ns = time.monotonic_ns()
    for event in parse_line(line).events:
        kind = event.type.value
        if run.events == 0 and kind not in CONTENT_TYPES:
            continue
        if run.events == 0:
            run.first_s = now_ns / 1e9
        run.events += 1
        run.last_s = now_ns / 1e9
        if kind == "message":
            blocks = getattr(event.data, "content", None) or []
            text = getattr(blocks[0], "text", "") if blocks else ""
            value = latency_ms(text if isinstance(text, str) else "", now_ns)
            if value is not None:
                run.latencies_ms.append(value)
