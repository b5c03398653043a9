"""bench.latency_trace (a profiling tool, not a test of speed): its work horses load the
tracing hooks and every step it reports is found, so a renamed hot-path function shows
up here rather than as a tool that silently traces nothing. No timing is asserted."""

from __future__ import annotations

import pytest

from bench import latency_trace


def test_the_trace_times_every_step_of_a_real_run(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert latency_trace.main(["-n", "200", "--trials", "1", "--redis-url", redis_url]) == 0
    out = capsys.readouterr().out
    reads = int(out.split(" reads of one stamped line", 1)[0].split()[-1])
    assert reads > 0
    for name, _, _ in latency_trace.STEPS:
        assert name in out
    assert "CLI write -> subscriber has it" in out
