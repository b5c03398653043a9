"""Tables for people: a session's runs (summarised from its log), the sessions list,
and the queue's status. Summaries are pure; tables are rich `Table`s of `Text` cells."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError
from rich import box
from rich.table import Table
from rich.text import Text

from producer.render_text import age, cost, duration, one_line, plural
from producer.status import QueueStatus
from shared.events import Envelope, FinishedData, QueuedData, ResultData, StartedData
from shared.runstore import SessionInfo

_PROMPT_CELL_CHARS = 60
_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "lost": "red",
    "interrupted": "yellow",
    "queued": "dim",
    "running": "cyan",
}


@dataclass(slots=True)
class RunSummary:
    """One run as its session's log tells it."""

    run_id: str
    status: str = "queued"  # queued, running, or the finished event's status
    queued_at: float | None = None
    started_at: float | None = None
    duration_s: float | None = None
    worker: str | None = None
    turns: int | None = None
    cost_usd: float | None = None
    prompt: str | None = None  # the queued event's preview (None from older producers)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_runs(envelopes: Iterable[Envelope]) -> list[RunSummary]:
    """The runs of a session's log in the order they were queued; broken payloads skipped."""
    runs: dict[str, RunSummary] = {}
    for envelope in envelopes:
        run = runs.get(envelope.run_id)
        if run is None:
            run = runs[envelope.run_id] = RunSummary(run_id=envelope.run_id)
        try:
            data = envelope.typed_data()
        except ValidationError:
            continue
        if isinstance(data, QueuedData):
            run.queued_at, run.prompt = envelope.ts, data.prompt
        elif isinstance(data, StartedData):
            run.started_at, run.worker, run.status = envelope.ts, data.worker, "running"
        elif isinstance(data, ResultData):
            run.turns, run.cost_usd = data.num_turns, data.total_cost_usd
        elif isinstance(data, FinishedData):
            run.status, run.duration_s = str(data.status), data.duration_s
    return list(runs.values())


def _status_cell(status: str | None) -> Text:
    if status is None:
        return Text("-", style="dim")
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    return table


def runs_table(runs: list[RunSummary], now: float) -> Table:
    """A session's runs, oldest first: id, status, queued, took, turns, cost, prompt."""
    table = _table("run", "status", "queued", "took", "turns", "cost", "prompt", right=("turns",))
    for run in runs:
        table.add_row(
            Text(run.run_id[:8]),
            _status_cell(run.status),
            Text(age(run.queued_at, now)),
            Text(duration(run.duration_s) if run.duration_s is not None else "-"),
            Text(str(run.turns) if run.turns is not None else "-"),
            Text(cost(run.cost_usd)),
            Text(one_line(run.prompt or "", _PROMPT_CELL_CHARS) or "-"),
        )
    return table


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A `sessions` line: the session's state plus what its log says of its runs."""

    info: SessionInfo
    runs: int
    last_status: str | None
    cost_usd: float | None

    def as_dict(self) -> dict[str, Any]:
        # `run_count`: `runs` is the list of runs in `session show --json`.
        return self.info.as_dict() | {
            "run_count": self.runs,
            "last_status": self.last_status,
            "cost_usd": self.cost_usd,
        }


def session_row(info: SessionInfo, runs: list[RunSummary]) -> SessionRow:
    costs = [run.cost_usd for run in runs if run.cost_usd is not None]
    return SessionRow(
        info=info,
        runs=len(runs),
        last_status=runs[-1].status if runs else None,
        cost_usd=round(sum(costs), 6) if costs else None,
    )


def sessions_table(rows: list[SessionRow], now: float) -> Table:
    """id, state, runs, last status, last activity (relative), cost."""
    table = _table(
        "session", "state", "runs", "last status", "last activity", "cost", right=("runs",)
    )
    for row in rows:
        table.add_row(
            Text(row.info.session_id),
            _status_cell(str(row.info.state)),
            Text(str(row.runs)),
            _status_cell(row.last_status),
            Text(age(row.info.last_activity, now)),
            Text(cost(row.cost_usd)),
        )
    return table


def workers_table(info: QueueStatus, now: float) -> Table:
    """Each worker: state, its current run and session, how long it has run, warm sessions."""
    table = _table("worker", "state", "run", "session", "elapsed", "warm")
    for worker in info.workers:
        run_id = worker.current_job
        started = info.started_at.get(run_id) if run_id else None
        warm = ", ".join(
            f"{session_id} ({duration(max(0.0, expires - now))} left)"
            for session_id, expires in sorted(worker.warm_sessions.items())
        )
        table.add_row(
            Text(worker.name),
            _status_cell(str(worker.state)),
            Text(run_id[:8] if run_id else "-"),
            Text(info.running.get(run_id, "-") if run_id else "-"),
            Text(duration(now - started) if started is not None else "-"),
            Text(warm or "-"),
        )
    return table


def status_summary(info: QueueStatus) -> Text:
    """`queue q: 3 queued · 2 running · 1 worker · 0 failed in the last hour`."""
    failed = info.failed_last_hour
    failed_text = (
        f"{failed} failed in the last hour"
        if failed is not None
        else "failed runs unknown (this Redis user may not read RQ's failed jobs)"
    )
    return Text.assemble(
        ("queue ", "dim"),
        (info.queue, "bold"),
        f": {info.queued} queued · {len(info.running)} running · "
        f"{plural(len(info.workers), 'worker')} · ",
        (failed_text, "red" if failed else ""),
    )
