"""Rendering for people, without Redis: words and numbers, tool lines, run summaries."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from producer.render import Renderer, Verbosity
from producer.render_blocks import key_argument
from producer.render_runs import summarize_runs
from producer.render_text import age, duration, moment, one_line, ordinal, plural, tokens_in_out
from producer.status import QueuePosition
from producer.submission import prompt_preview
from shared.events import Envelope

NOW = 1_800_000_000.0
RUN = "b" * 32


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (101, "101st"),
        (111, "111th"),
    ],
)
def test_ordinals(number: int, text: str) -> None:
    assert ordinal(number) == text


def test_plurals_durations_and_ages() -> None:
    assert plural(1, "turn") == "1 turn"
    assert plural(0, "turn") == "0 turns"
    assert plural(2, "entry", "entries") == "2 entries"
    assert duration(0.111) == "0.11s"
    assert duration(42.04) == "42.0s"
    assert duration(185) == "3m 05s"
    assert duration(7380) == "2h 03m"
    assert duration(90000) == "1d 01h"
    assert age(None, NOW) == "-"
    assert age(NOW - 2, NOW) == "just now"
    assert age(NOW - 12, NOW) == "12s ago"
    assert age(NOW - 300, NOW) == "5m ago"
    assert age(NOW - 3 * 3600, NOW) == "3h ago"
    assert age(NOW - 2 * 86400, NOW) == "2d ago"
    assert moment(NOW + 300, NOW).endswith("(in 5m 00s)")
    assert moment(NOW - 30, NOW).endswith("(30.0s ago)")
    assert str(int(NOW)) not in moment(NOW, NOW)


def test_one_line_and_token_counts() -> None:
    assert one_line("a\nb\nc", 10) == "a (+2 lines)"
    assert one_line("x" * 20, 5) == "xxxxx…"
    assert one_line("  \n", 5) == ""
    usage = {"input_tokens": 3, "cache_read_input_tokens": 100, "output_tokens": 7, "junk": "x"}
    assert tokens_in_out(usage) == (103, 7)
    assert tokens_in_out({"input_tokens": True, "output_tokens": "9"}) == (0, 0)
    assert tokens_in_out(None) is None


@pytest.mark.parametrize(
    ("tool", "tool_input", "shown"),
    [
        ("Bash", {"command": "ls -la\nwc -l", "description": "List"}, "ls -la (+1 line)"),
        ("Edit", {"file_path": "src/app.py", "old_string": "a"}, "src/app.py"),
        ("Grep", {"pattern": "TODO", "path": "src"}, "TODO"),
        ("WebFetch", {"url": "https://example.org", "prompt": "x"}, "https://example.org"),
        ("TodoWrite", {"todos": [{}, {}]}, "2 items"),
        ("mcp__x__y", {"n": 1, "query": "weather"}, "weather"),
        ("Bash", {}, ""),
    ],
)
def test_key_argument(tool: str, tool_input: dict[str, Any], shown: str) -> None:
    assert key_argument(tool, tool_input) == shown


def test_queue_position_sentences() -> None:
    assert QueuePosition(3, 5, 2, 2, 0).describe() == "3rd in queue, 2 of 2 workers busy"
    assert QueuePosition(1, 1, 0, 0, 0).describe() == "1st in queue, no worker is running"
    assert QueuePosition(None, 0, 1, 1, 2).describe() == (
        "behind 2 earlier runs of its session, 1 of 1 worker busy"
    )
    assert QueuePosition(None, 0, 1, 0, 0).describe() == "being picked up, 0 of 1 worker busy"


def test_prompt_preview_is_bounded() -> None:
    assert prompt_preview("short") == "short"
    cut = prompt_preview("x" * 2500)
    assert cut is not None
    assert cut.startswith("x" * 2000) and cut.endswith("…[truncated 500 chars]")
    assert prompt_preview("abcdef", 4) == "abcd…[truncated 2 chars]"
    assert prompt_preview("abcdef", 0) is None  # CLAUDE_QUEUE_PROMPT_PREVIEW_CHARS=0: none


def test_the_queued_event_cuts_the_prompt_to_the_setting() -> None:
    from producer.submission import prepare
    from shared.events import QueuedData
    from shared.jobs import PromptJob
    from shared.settings import Settings

    job = PromptJob(session_id="s1", prompt="y" * 50)
    short, none = (prepare(Settings(prompt_preview_chars=n), job).queued.data for n in (10, 0))
    assert isinstance(short, QueuedData) and isinstance(none, QueuedData)
    assert short.prompt == "y" * 10 + "…[truncated 40 chars]"
    assert none.prompt is None


def _envelope(seq: int, event_type: str, data: dict[str, Any], run_id: str = RUN) -> Envelope:
    return Envelope(
        seq=seq, session_id="s1", run_id=run_id, ts=NOW + seq, type=event_type, data=data
    )


RUN_LOG = [
    _envelope(1, "queued", {"profile": "readonly", "prompt": "[bold]hi[/bold]"}),
    _envelope(2, "waiting", {"reason": "concurrency_limit", "key": "team-a"}),
    _envelope(2, "started", {"worker": "w1", "host": "h", "pid": 7}),
    _envelope(
        3,
        "message",
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}},
            ],
        },
    ),
    _envelope(
        4,
        "message",
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "a\nb"},
            ],
        },
    ),
    _envelope(5, "message", {"role": "assistant", "content": [{"type": "text", "text": "# Done"}]}),
    _envelope(
        6,
        "result",
        {
            "is_error": False,
            "result": "# Done",
            "num_turns": 2,
            "total_cost_usd": 0.01,
            "duration_ms": 1500,
            "usage": {"input_tokens": 10, "output_tokens": 4},
        },
    ),
    _envelope(7, "finished", {"status": "succeeded", "duration_s": 1.6, "exit_code": 0}),
    _envelope(8, "queued", {"profile": "readonly"}, run_id="c" * 32),  # an older producer's
]


def _shown(verbosity: Verbosity, terminal: bool = False) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    console = Console(file=out, width=300, color_system=None, force_terminal=terminal)
    renderer = Renderer(
        console,
        clock=lambda: NOW,
        verbosity=verbosity,
        errors=Console(file=err, width=300, color_system=None),
    )
    for envelope in RUN_LOG:
        renderer.show(envelope)
    return out.getvalue(), err.getvalue()


def test_normal_rendering_reads_like_a_run() -> None:
    text, errors = _shown(Verbosity.NORMAL)
    lines = text.splitlines()
    assert "> [bold]hi[/bold]" in lines  # markup in data stays text
    assert any(line.endswith(" · waiting: concurrency limit · limit team-a") for line in lines)
    assert "thinking: hmm" in lines
    assert "→ Bash  ls" in lines
    assert "← a (+1 line)" in lines
    assert "# Done" in lines  # a pipe gets the Markdown source, grep-able
    result = next(line for line in lines if "result: ok" in line)
    assert "2 turns · tokens 10 in / 4 out · cost $0.0100 ($0.0050/turn) · took 1.50s" in result
    assert any("■ run bbbbbbbb succeeded in 1.60s" in line for line in lines)
    assert "exit code" not in text and "None" not in text
    assert errors == ""


def test_quiet_shows_the_final_answer_only_and_verbose_shows_more() -> None:
    quiet, errors = _shown(Verbosity.QUIET)
    assert quiet == "# Done\n"
    assert errors == ""
    verbose, _ = _shown(Verbosity.VERBOSE)
    assert '"command": "ls"' in verbose
    assert "exit code 0" in verbose
    assert "CLI pid 7" in verbose
    assert "tokens 10 in, 4 out" not in verbose  # message usage absent here: not invented


def test_a_terminal_gets_markdown() -> None:
    text, _ = _shown(Verbosity.NORMAL, terminal=True)
    assert "# Done" not in text and "Done" in text


def test_runs_are_summarised_from_the_log() -> None:
    first, second = summarize_runs(RUN_LOG)
    assert (first.status, first.turns, first.cost_usd, first.worker) == ("succeeded", 2, 0.01, "w1")
    assert first.prompt == "[bold]hi[/bold]" and first.duration_s == 1.6
    assert (second.status, second.prompt, second.started_at) == ("queued", None, None)
