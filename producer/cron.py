"""Crons, the API: add, list, remove and run (fire now); and the ticker's step.

    from producer.cron import add_cron, run_cron
    add_cron(client, "triage", schedule="0 9 * * 1-5",
             session_template="triage-{date}", prompt="Triage new issues")
    run_cron(client, "triage")  # fire now, outside the schedule

What a cron is and when it is due: shared/cron.py. Each firing is an ordinary submit
(its own `queued` event, metadata `cron` and `cron_tick`), in a session made from the
template or in the cron's fixed session. While the cron's previous firing is still
queued or running, a firing follows the cron's on_busy: `enqueue` submits anyway (in a
fixed session it waits its turn; from a template it runs in its own session), `reject`
skips the firing, `interrupt` cancels the previous firing and then submits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import structlog
from pydantic import ValidationError

from producer.client import Client
from producer.errors import InvalidJobError, redis_errors
from producer.submission import prepare, validate_job
from shared.cron import CLAIM_TICK_LUA, CronSpec, latest_tick, next_tick
from shared.jobs import OnBusy, describe_validation_error
from shared.runstore import RunState, RunStore
from shared.runstore.replies import text

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CronFiring:
    """One firing: the run it submitted, or why it submitted none (`skipped`)."""

    name: str
    tick: float
    session_id: str
    run_id: str | None = None
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class CronInfo:
    """A cron as `cron list` shows it."""

    spec: CronSpec
    next_tick: float
    last_tick: float | None
    last_session_id: str | None
    last_run_id: str | None


def _spec(
    store: RunStore, name: str, schedule: str, on_busy: OnBusy, target: dict[str, Any]
) -> CronSpec:
    try:
        spec = CronSpec.model_validate(
            {
                "name": name,
                "schedule": schedule,
                "on_busy": on_busy,
                "created_at": time.time(),
                **target,
            }
        )
        # The worker's checks too (known profile, webhook target), on the first tick's job.
        validate_job(store.settings, spec.prompt_job(next_tick(spec.schedule, spec.created_at)), {})
    except ValidationError as exc:
        raise InvalidJobError(f"invalid cron: {describe_validation_error(exc)}") from None
    return spec


@redis_errors()
def add_cron(
    client: Client,
    name: str,
    *,
    schedule: str,
    session_template: str | None = None,
    session_id: str | None = None,
    on_busy: OnBusy = "enqueue",
    replace: bool = False,
    **job_fields: Any,
) -> CronSpec:
    """Store a cron (InvalidJobError if any part is bad, or it exists and not `replace`).

    `job_fields` are PromptJob's (prompt, model, profile, priority, ...) but session_id.
    """
    target = {"session_template": session_template, "session_id": session_id, "job": job_fields}
    spec = _spec(client.store, name, schedule, on_busy, target)
    crons = client.keys.crons
    stored = spec.model_dump_json()
    if replace:
        client.redis.hset(crons, name, stored)
    elif not client.redis.hsetnx(crons, name, stored):
        raise InvalidJobError(f"a cron named {name!r} exists (remove it, or replace it)")
    return spec


@redis_errors()
def remove_cron(client: Client, name: str) -> bool:
    """Delete a cron and its state; True if it existed. A firing in flight still runs."""
    with client.redis.pipeline() as pipe:
        pipe.hdel(client.keys.crons, name)
        pipe.delete(client.keys.cron_state(name))
        return bool(pipe.execute()[0])


@redis_errors()
def list_crons(client: Client) -> list[CronInfo]:
    """Every stored cron, by name, with its next tick and its last firing."""
    now = time.time()
    found = []
    for spec in load_crons(client.store):
        state = _state(client.store, spec.name)
        last = state.get("last_tick")
        found.append(
            CronInfo(
                spec=spec,
                next_tick=next_tick(spec.schedule, now),
                last_tick=float(last) if last else None,
                last_session_id=state.get("last_session_id"),
                last_run_id=state.get("last_run_id"),
            )
        )
    return found


@redis_errors()
def run_cron(client: Client, name: str) -> CronFiring:
    """Fire a cron now, outside its schedule (InvalidJobError if there is no such cron)."""
    raw = client.redis.hget(client.keys.crons, name)
    spec = _parse(name, raw)
    if spec is None:
        raise InvalidJobError(f"no cron named {name!r}")
    return fire(client.store, spec, time.time())


def load_crons(store: RunStore) -> list[CronSpec]:
    """The stored crons, by name; one that does not parse is logged and left out."""
    raw = cast(dict[Any, Any], store.redis.hgetall(store.keys.crons))
    specs = [_parse(text(name) or "", value) for name, value in raw.items()]
    return sorted((s for s in specs if s is not None), key=lambda s: s.name)


def _parse(name: str, raw: object) -> CronSpec | None:
    if raw is None:
        return None
    try:
        spec = CronSpec.model_validate_json(cast(str | bytes, raw))
    except ValidationError as exc:
        log.warning("cron_unreadable", cron=name, error=describe_validation_error(exc))
        return None
    if spec.name != name:
        log.warning("cron_misnamed", cron=name, spec_name=spec.name)
        return None
    return spec


def _state(store: RunStore, name: str) -> dict[str, str]:
    raw = cast(dict[Any, Any], store.redis.hgetall(store.keys.cron_state(name)))
    return {text(k) or "": text(v) or "" for k, v in raw.items()}


def _busy_run(store: RunStore, name: str) -> tuple[str, str] | None:
    """The cron's previous firing, if it is still queued or running."""
    state = _state(store, name)
    session_id, run_id = state.get("last_session_id"), state.get("last_run_id")
    if not session_id or not run_id:
        return None
    record = store.run_record(session_id, run_id)
    if record.state in (RunState.QUEUED, RunState.RUNNING):
        return session_id, run_id
    return None


def fire(store: RunStore, spec: CronSpec, tick: float) -> CronFiring:
    """Submit the cron's run for `tick`, as its on_busy says."""
    try:
        job = validate_job(store.settings, spec.prompt_job(tick), {})
    except (ValidationError, InvalidJobError, ValueError) as exc:
        # e.g. a profile the workers no longer know: the cron stays, this firing is skipped.
        return CronFiring(spec.name, tick, spec.session_id or "", skipped=f"invalid job: {exc}")
    busy = _busy_run(store, spec.name)
    if busy is not None and spec.on_busy == "reject":
        return CronFiring(spec.name, tick, job.session_id, skipped="previous firing still busy")
    if busy is not None and spec.on_busy == "interrupt":
        store.cancel(*busy, reason=f"interrupted by the next firing of cron {spec.name}")
    run = prepare(store.settings, job)
    store.submit(run)
    store.redis.hset(
        store.keys.cron_state(spec.name),
        mapping={
            "last_session_id": run.session_id,
            "last_run_id": run.run_id,
            "last_fired_at": str(time.time()),
        },
    )
    return CronFiring(spec.name, tick, run.session_id, run_id=run.run_id)


def claim_tick(store: RunStore, name: str, tick: float) -> bool:
    """Claim the cron's `tick` for this caller; False if it was claimed (or the cron is gone)."""
    # EVALSHA (LOAD on first use): the worker's ACL allows scripts only that way.
    claim = store.redis.register_script(CLAIM_TICK_LUA)
    keys = [store.keys.cron_state(name), store.keys.crons]
    return bool(claim(keys=keys, args=[name, repr(tick)]) == 1)


def tick_crons(store: RunStore, now: float) -> list[CronFiring]:
    """The ticker's step: fire every cron whose latest tick at `now` nobody claimed yet."""
    fired = []
    for spec in load_crons(store):
        tick = latest_tick(spec.schedule, now)
        if tick <= spec.created_at:
            continue  # no tick since the cron was added
        if claim_tick(store, spec.name, tick):
            fired.append(fire(store, spec, tick))
    return fired
