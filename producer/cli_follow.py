"""Following a run on the command line (`submit --follow`, `tail`): render each event,
show a live queue position while the run waits, and make Ctrl-C say what it left running.

Ctrl-C stops following only: the run goes on. The first one prints the exact cancel
command; a second one within `SECOND_INTERRUPT_S` offers to cancel (on a terminal).
The command then exits 130 (ExitCode.INTERRUPTED).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import NoReturn

import click
import redis
from pydantic import ValidationError
from rich.console import Console
from rich.status import Status
from rich.text import Text

from producer.cli_approvals import InlineAnswers, is_interactive
from producer.cli_common import make_console
from producer.client import Client
from producer.errors import InvalidJobError, RedisUnavailable
from producer.render import Renderer, Verbosity
from producer.render_text import duration
from producer.status import read_position
from shared.events import Envelope, EventType, FinishedData, RunStatus
from shared.exitcodes import ExitCode
from shared.runstore import SessionState

SECOND_INTERRUPT_S = 2.0
_POSITION_POLL_S = 1.0


def run_status(envelope: Envelope) -> RunStatus | None:
    """How the run of a `finished` envelope ended; None if unknown to this client."""
    try:
        data = envelope.typed_data()
    except ValidationError:  # a broken or reshaped payload: not a success we can vouch for
        return None
    return data.known_status if isinstance(data, FinishedData) else None


class QueuedSpinner:
    """A live `queued · 3rd in queue, 2 of 2 workers busy · 4.1s` line on a terminal,
    refreshed from Redis by a thread until the run's next event arrives."""

    def __init__(self, client: Client, console: Console, session_id: str, run_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self.run_id = run_id
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._status = Status(Text("queued", style="dim"), console=console, spinner="dots")
        self._thread = threading.Thread(target=self._poll, name="queue-position", daemon=True)

    def start(self) -> None:
        self._status.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._status.stop()

    def _poll(self) -> None:
        where = ""
        while not self._stop.is_set():
            try:
                position = read_position(
                    self.client.redis,
                    self.client.settings,
                    self.client.keys,
                    self.session_id,
                    self.run_id,
                )
                where = position.describe()
            except (redis.RedisError, RedisUnavailable):  # a status line must never end the follow
                where = where or "position unknown"
            elapsed = duration(time.monotonic() - self.started)
            self._status.update(Text(f"queued · {where} · {elapsed}", style="dim"))
            self._stop.wait(_POSITION_POLL_S)


class Follower:
    """Prints a stream of envelopes for a person (or as JSON lines) and answers
    permission requests inline on a terminal."""

    def __init__(
        self,
        client: Client,
        *,
        as_json: bool,
        verbosity: Verbosity,
        session_id: str,
        run_id: str | None = None,
        second_interrupt_s: float = SECOND_INTERRUPT_S,
    ) -> None:
        self.client = client
        self.second_interrupt_s = second_interrupt_s
        self.as_json = as_json
        self.session_id = session_id
        self.run_id = run_id  # the run submit follows; None for tail
        self.console = make_console()
        self.renderer = Renderer(
            self.console, verbosity=verbosity, errors=make_console(stderr=True)
        )
        self.answers = InlineAnswers(client) if is_interactive(as_json) else None
        self.last_run_id: str | None = run_id
        self._spinner: QueuedSpinner | None = None

    def follow(self, envelopes: Iterable[Envelope]) -> RunStatus | None:
        """Print every envelope; the status of the last finished run (None if none)."""
        status: RunStatus | None = None
        try:
            for envelope in envelopes:
                self._stop_spinner()
                self.last_run_id = envelope.run_id
                if self.as_json:
                    click.echo(envelope.model_dump_json())
                else:
                    self.renderer.show(envelope)
                if self.answers is not None:
                    self.answers.offer(envelope)
                if envelope.is_terminal:
                    status = run_status(envelope)
                elif envelope.type in (EventType.QUEUED, EventType.WAITING):
                    self._waiting(envelope)  # until its next event: started, most often
        finally:
            self._stop_spinner()
        return status

    def _waiting(self, envelope: Envelope) -> None:
        """The followed run was queued: show where it stands until its next event."""
        if envelope.run_id != self.run_id or self.as_json or self.renderer.quiet:
            return
        if not self.console.is_terminal:
            return  # no live widgets in a pipe
        self._spinner = QueuedSpinner(self.client, self.console, self.session_id, envelope.run_id)
        self._spinner.start()

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

    def interrupted(self) -> NoReturn:
        """Ctrl-C: say what keeps running and how to stop it; offer to cancel on a second."""
        # From here a Ctrl-C is held, not raised, so one that comes while the lines
        # below are printed still counts as the second (sigtimedwait takes it).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        err = make_console(stderr=True)
        run_id = self._pending_run()
        if run_id is None:
            err.print(Text(f"stopped following session {self.session_id}"))
            sys.exit(ExitCode.INTERRUPTED)
        command = self._cancel_command(run_id)
        err.print(
            Text.assemble(
                f"\nrun {run_id[:8]} is still {self._state_word(run_id)}; ",
                (command, "bold"),
                " stops it",
            )
        )
        err.print(
            Text(f"(Ctrl-C again within {self.second_interrupt_s:g} s to cancel it)", style="dim")
        )
        if signal.sigtimedwait({signal.SIGINT}, self.second_interrupt_s) is not None:
            self._offer_cancel(run_id, command, err)
        sys.exit(ExitCode.INTERRUPTED)

    def _pending_run(self) -> str | None:
        """The run this command was following if it is still queued or running."""
        try:
            pending = self.client.store.pending_runs(self.session_id)
        except (redis.RedisError, RedisUnavailable):  # Ctrl-C must exit cleanly without Redis
            return self.run_id
        if self.run_id is not None:
            return self.run_id if self.run_id in pending else None
        return pending[0] if pending else None

    def _state_word(self, run_id: str) -> str:
        """`running` if the run heads its session and the session runs; else `queued`."""
        try:
            info = self.client.session(self.session_id)
            head = self.client.store.current_run(self.session_id)
        except (redis.RedisError, RedisUnavailable):
            return "running"  # unknown: the cautious word
        running = info is not None and info.state is SessionState.RUNNING and head == run_id
        return "running" if running else "queued"

    def _cancel_command(self, run_id: str) -> str:
        try:
            head = self.client.store.current_run(self.session_id)
        except (redis.RedisError, RedisUnavailable):  # then name the run: always right
            head = None
        if head == run_id:
            return f"claude-queue cancel {self.session_id}"
        return f"claude-queue cancel {self.session_id} --run {run_id}"

    def _offer_cancel(self, run_id: str, command: str, err: Console) -> None:
        if not sys.stdin.isatty():
            err.print(Text(f"not cancelled (no terminal to confirm on); run: {command}"))
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # Ctrl-C: "no"
        try:
            confirmed = click.confirm(f"Cancel run {run_id[:8]} now?", default=False, err=True)
        except (click.Abort, KeyboardInterrupt):
            confirmed = False
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        if not confirmed:
            err.print(Text(f"left running; {command} stops it"))
            return
        try:
            result = self.client.cancel(self.session_id, run_id=run_id)
        except InvalidJobError as exc:
            err.print(Text(f"cannot cancel: {exc}"))
            return
        err.print(Text(f"{result.outcome.value} (session {self.session_id}, run {run_id[:8]})"))
