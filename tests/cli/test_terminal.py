"""`claude-queue` on a terminal (a real pseudo-terminal) and under Ctrl-C (a real SIGINT)."""

from __future__ import annotations

import signal

from producer.client import Client
from shared.events import EventType
from shared.settings import Settings
from tests.cli.support import ANSI, COLOUR, Piped, Terminal, run
from tests.conftest import WorkerFactory

# A second Ctrl-C must land inside the offer window: widened, so a busy machine cannot miss it.
WIDE = ("--second-interrupt-s", "60")


def still_running(session_id: str) -> str:
    return rf"run [0-9a-f]{{8}} is still running; claude-queue cancel {session_id} stops it"


def _started(client: Client, session_id: str) -> None:
    """Wait until the session's run has started (its `started` event is logged)."""
    for envelope in client.stream(session_id, timeout_s=60):
        if envelope.type is EventType.STARTED:
            return


def test_ctrl_c_stops_following_says_how_to_cancel_and_exits_130(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    follow = Piped(settings, "submit", "FAKE: hang", "--session", "c1", "--follow")
    try:
        follow.out.wait_for(lambda line: "started on" in line, "the started line")
        follow.proc.send_signal(signal.SIGINT)
        line = follow.err.wait_for(lambda line: "still running" in line, "the hint")
        assert line.strip().endswith("claude-queue cancel c1 stops it")
        follow.err.wait_for(lambda line: "Ctrl-C again within 2 s" in line, "the offer")
        assert follow.wait() == 130
        assert "Aborted" not in follow.err.rest()
    finally:
        follow.close()
    info = client.session("c1")
    assert info is not None and info.state == "running"  # following stopped, the run did not
    cancelled = run(settings, "cancel", "c1", "--wait")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("cancelled_running")


def test_a_second_ctrl_c_without_a_terminal_only_repeats_the_command(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    follow = Piped(settings, "submit", "FAKE: hang", "--session", "c2", "--follow", *WIDE)
    try:
        follow.out.wait_for(lambda line: "started on" in line, "the started line")
        follow.proc.send_signal(signal.SIGINT)
        follow.err.wait_for(lambda line: "Ctrl-C again" in line, "the offer")
        follow.proc.send_signal(signal.SIGINT)
        line = follow.err.wait_for(lambda line: "not cancelled" in line, "the refusal")
        assert "claude-queue cancel c2" in line
        assert follow.wait() == 130
    finally:
        follow.close()
    info = client.session("c2")
    assert info is not None and info.state == "running"
    client.cancel("c2", wait=True)


def test_a_second_ctrl_c_on_a_terminal_offers_to_cancel(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    start_worker()
    term = Terminal(settings, "submit", "FAKE: hang", "--session", "c3", "--follow", *WIDE)
    try:
        term.expect(r"started on")
        term.proc.send_signal(signal.SIGINT)
        term.expect(still_running("c3"))
        term.expect(r"Ctrl-C again within 60 s")
        term.proc.send_signal(signal.SIGINT)
        term.expect(r"Cancel run [0-9a-f]{8} now\? \[y/N\]")
        term.send("y\n")
        term.expect(r"cancelled_running \(session c3")
        assert term.wait() == 130
    finally:
        term.close()
    # The owner acknowledged the cancel; its worker writes `finished` once the CLI died.
    events = list(client.stream("c3", stop_at_finish=True, timeout_s=60))
    finished = [e for e in events if e.type is EventType.FINISHED]
    assert [e.data["status"] for e in finished] == ["interrupted"]


def test_terminal_output_has_colour_markdown_and_a_live_queue_position(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    term = Terminal(settings, "submit", "FAKE: text text=**bold**", "--session", "t1", "--follow")
    try:
        # No worker yet: the spinner says where the run waits.
        term.expect(r"queued · 1st in queue, no worker is running · \d")
        start_worker()
        term.expect(r"■ run [0-9a-f]{8} succeeded")
        assert term.wait() == 0
    finally:
        term.close()
    assert COLOUR.search(term.text)  # colour on a terminal
    screen = ANSI.sub("", term.text)
    answer = screen.split("claude 2.1.330")[1].split("result: ok")[0]
    assert "bold" in answer and "**" not in answer  # Markdown rendered, not printed raw


def test_no_color_is_respected_on_a_terminal(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    term = Terminal(settings, "submit", "hi", "--session", "n1", "--follow", env={"NO_COLOR": "1"})
    try:
        term.expect(r"ECHO:hi")
        assert term.wait() == 0
    finally:
        term.close()
    assert not COLOUR.search(term.text)


def test_tail_waits_only_with_wait(
    settings: Settings, client: Client, start_worker: WorkerFactory
) -> None:
    tail = Piped(settings, "tail", "w1", "--wait", "--until-finished")
    try:
        tail.err.wait_for(lambda line: "waiting for session w1" in line, "the waiting note")
        start_worker()
        client.submit(session_id="w1", prompt="late")
        tail.out.wait_for(lambda line: "ECHO:late" in line, "the answer")
        assert tail.wait() == 0
    finally:
        tail.close()
    failed = client.submit(session_id="w1", prompt="FAKE: error_result")
    failed.wait(timeout_s=60)
    replay = run(settings, "tail", "w1", "--after", str(failed.queued_seq - 1), "--until-finished")
    assert replay.returncode == 1  # that run did not succeed


def test_ctrl_c_while_queued_says_queued(settings: Settings, client: Client) -> None:
    follow = Piped(settings, "submit", "hi", "--session", "c4", "--follow")  # no worker
    try:
        follow.out.wait_for(lambda line: "queued run" in line, "the queued line")
        follow.proc.send_signal(signal.SIGINT)
        line = follow.err.wait_for(lambda line: "still" in line, "the hint")
        assert line.strip().endswith("is still queued; claude-queue cancel c4 stops it")
        assert follow.wait() == 130
    finally:
        follow.close()
    assert client.cancel("c4").outcome == "cancelled_queued"
