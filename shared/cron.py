"""Crons: prompts submitted on a schedule. What a cron is, and when it is due. Pure.

A cron is stored in Redis (Keys.crons: name -> CronSpec JSON), so it survives restarts
and every worker sees the same ones. Every worker running the scheduler also runs a
ticker (worker/cron.py) that fires the crons whose latest tick is newer than the last
tick fired. Which worker fires a tick is decided by a compare-and-set of the cron's
`last_tick` in Redis (CLAIM_TICK_LUA): a tick is claimed once, by one worker, however
many look at it at the same time; a tick at or before the last one claimed never fires.

Why not RQ's CronScheduler (rq/cron.py): its crons are registered in each process
(code or a config file), not stored in Redis; every scheduler process enqueues on its
own, with no claim shared between them, so three workers would fire three times; and
it enqueues a bare RQ job, while a firing here must be a run (its `queued` event,
its session's order, on_busy). croniter, which RQ's cron uses, computes the ticks.

Ticks are in UTC. After a time with no ticker (all workers down) only the latest
missed tick fires, once; earlier missed ones are skipped, not fired in a burst.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.jobs import SESSION_ID_PATTERN, OnBusy, PromptJob

CRON_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SCHEDULE_CHARS = 200
MAX_TEMPLATE_CHARS = 200
# What a session template may name, e.g. "triage-{date}" -> "triage-2030-01-07".
TEMPLATE_FIELDS = frozenset({"name", "date", "time", "tick"})
# The job fields a cron sets itself (each firing's session).
_CRON_SET_FIELDS = frozenset({"session_id"})

# KEYS: cron state hash, crons hash. ARGV: cron name, tick (epoch seconds).
# Returns 1 if this call claimed the tick (it was newer than the last one and the cron
# still exists), else 0. One atomic step: two tickers can never both claim a tick.
CLAIM_TICK_LUA = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick') or '0') or 0
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('HSET', KEYS[1], 'last_tick', ARGV[2])
return 1
"""


class CronError(ValueError):
    """A cron definition that cannot be used; the message says why."""


def _croniter() -> Any:
    """croniter's class, imported on first use: a worker with no crons never loads it."""
    from croniter import croniter  # type: ignore[import-untyped]

    return croniter


def check_schedule(schedule: str) -> str:
    """A cron expression croniter accepts: 5 fields, or 6 with seconds last."""
    text = " ".join(schedule.split())
    fields = len(text.split(" "))
    if not text or len(text) > MAX_SCHEDULE_CHARS or fields not in (5, 6):
        raise CronError(f"schedule must be a cron expression of 5 or 6 fields; got {schedule!r}")
    if not _croniter().is_valid(text):
        raise CronError(f"schedule {schedule!r} is not a valid cron expression")
    return text


def check_template(template: str) -> str:
    """A session template naming only TEMPLATE_FIELDS, with no format spec or attribute."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise CronError(f"session template is longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise CronError(f"session template {template!r}: {exc}") from None
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            known = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
            raise CronError(f"session template {template!r}: use only {known}")
    return template


def render_session(template: str, *, name: str, tick: float) -> str:
    """The session id of the firing at `tick` (UTC), checked like any session id."""
    when = datetime.fromtimestamp(tick, UTC)
    values = {
        "name": name,
        "date": when.strftime("%Y-%m-%d"),
        "time": when.strftime("%H%M%S"),
        "tick": str(int(tick)),
    }
    session_id = template.format_map(values)
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise CronError(
            f"session template {template!r} gives {session_id!r}, which is not a valid "
            "session id (letters, digits, _ . -; at most 128)"
        )
    return session_id


def latest_tick(schedule: str, now: float) -> float:
    """The latest tick of `schedule` at or before `now` (epoch seconds, UTC)."""
    # croniter's get_prev is strictly before its start: start just after `now`.
    return float(_croniter()(schedule, now + 1e-3).get_prev(float))


def next_tick(schedule: str, now: float) -> float:
    """The first tick of `schedule` after `now`."""
    return float(_croniter()(schedule, now).get_next(float))


class CronSpec(BaseModel):
    """One cron: when it fires, where each firing runs, and the job it submits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=CRON_NAME_PATTERN)
    schedule: str = Field(min_length=1, max_length=MAX_SCHEDULE_CHARS)
    # Exactly one: a template (a new session per firing) or one fixed session.
    session_template: str | None = None
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    # What a firing does while the cron's previous firing is still queued or running.
    on_busy: OnBusy = "enqueue"
    # PromptJob fields but session_id (prompt, model, profile, priority, retry_lost, ...).
    job: dict[str, Any]
    created_at: float

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return check_schedule(value)

    @field_validator("session_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("job")
    @classmethod
    def _job_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(_CRON_SET_FIELDS & value.keys())
        if taken:
            raise ValueError(f"the cron sets {', '.join(taken)} itself")
        return value

    @model_validator(mode="after")
    def _one_session(self) -> CronSpec:
        if (self.session_template is None) == (self.session_id is None):
            raise ValueError("give a session template or a fixed session id (one of them)")
        # Valid at every tick: try the job, and the template on the cron's first tick.
        self.prompt_job(next_tick(self.schedule, self.created_at))
        return self

    def session_for(self, tick: float) -> str:
        """The session of the firing at `tick`."""
        if self.session_id is not None:
            return self.session_id
        assert self.session_template is not None
        return render_session(self.session_template, name=self.name, tick=tick)

    def prompt_job(self, tick: float) -> PromptJob:
        """The job a firing at `tick` submits (ValidationError if the fields are bad)."""
        fields = {**self.job, "session_id": self.session_for(tick)}
        metadata = fields.get("metadata", {})
        if isinstance(metadata, dict):  # anything else is refused by PromptJob below
            fields["metadata"] = {**metadata, "cron": self.name, "cron_tick": int(tick)}
        return PromptJob.model_validate(fields)
