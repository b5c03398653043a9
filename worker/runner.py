"""Execute one run: claim it, spawn the CLI, pump its lines through parser and
publisher, honour cancel and timeouts, and always end with exactly one `finished`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from typing import TYPE_CHECKING

import redis
import structlog

from shared.control import CancelRequest
from shared.events import (
    ErrorCode,
    Event,
    EventType,
    FinishedData,
    RunStatus,
    StartedData,
)
from shared.jobs import PromptJob, RunRequest
from worker import retries, reuse, session, workdir
from worker.claim import claim_run
from worker.cli_env import cli_environment
from worker.command import CliCommand, UnknownProfileError, build_command
from worker.context import WorkerContext, through_outage
from worker.control import ControlListener
from worker.errors import error_event
from worker.interaction import Interaction
from worker.lease import LeaseKeeper
from worker.limits import Slots
from worker.outcome import RunObservations, final_events
from worker.process import CliProcess
from worker.proctree import enable_subreaper
from worker.publisher import OwnershipLost, Publisher
from worker.pump import CancelState, flag_set, pump

if TYPE_CHECKING:  # prometheus_client is imported only where metrics are served
    from worker.metrics import RunMeter, WorkerMetrics

log = structlog.get_logger(__name__)


def _fail_now(publisher: Publisher, code: ErrorCode, message: str, started: float) -> RunStatus:
    finished = FinishedData(
        status=RunStatus.FAILED, duration_s=round(time.monotonic() - started, 6), reason=message
    )
    publisher.publish(
        error_event(code, message),
        Event(type=EventType.FINISHED, data=finished),
        final_status=RunStatus.FAILED,
    )
    return RunStatus.FAILED


def claim_and_fail(
    ctx: WorkerContext,
    *,
    session_id: str,
    run_id: str,
    code: ErrorCode,
    message: str,
    started: float,
) -> None:
    """End a run that cannot start (e.g. an invalid payload) with error + finished."""
    claimed = claim_run(ctx, session_id, run_id)
    if claimed is not None:
        _fail_now(claimed[0], code, message, started)


def execute_run(
    request: RunRequest, ctx: WorkerContext, metrics: WorkerMetrics | None = None
) -> RunStatus | None:
    """Run one request to its end. None when this delivery was not ours to run."""
    started = time.monotonic()
    slots = Slots(ctx, request.job.session_id, request.run_id, request.job.limit_key)
    try:
        return _execute_claimed(request, ctx, metrics, slots, started)
    finally:
        slots.release()  # frees its concurrency-limit slots at once and wakes waiters


def _execute_claimed(
    request: RunRequest,
    ctx: WorkerContext,
    metrics: WorkerMetrics | None,
    slots: Slots,
    started: float,
) -> RunStatus | None:
    claimed = claim_run(ctx, request.job.session_id, request.run_id, slots)
    if claimed is None:
        return None
    publisher, token = claimed
    meter = _meter(request, ctx, metrics)
    if meter is not None:
        publisher.attach(meter)
    try:
        return _run_cli(request, ctx, publisher, token, started, meter)
    except OwnershipLost:
        log.warning("run_fenced_off", detail="the session lease passed on; events refused")
        return None
    except Exception as exc:
        # A bug of ours must still end the run: error + finished, then re-raise for RQ.
        log.exception("run_crashed")
        # If even that fails, the reaper ends the run once its lease expires.
        with contextlib.suppress(OwnershipLost, redis.RedisError):
            _fail_now(publisher, ErrorCode.INTERNAL, f"the worker failed: {exc!r}", started)
        raise
    finally:
        if meter is not None:
            meter.close()


def _meter(
    request: RunRequest, ctx: WorkerContext, metrics: WorkerMetrics | None
) -> RunMeter | None:
    if metrics is None:
        return None
    job = request.job
    return metrics.run_meter(
        profile=job.profile or ctx.settings.default_profile,
        model=job.model,
        submitted_at=request.submitted_at,
    )


def _prepare(
    request: RunRequest, ctx: WorkerContext, publisher: Publisher, started: float
) -> tuple[session.ResumePlan, CliCommand] | RunStatus:
    """Decide cwd and resume, and build the command; a RunStatus if the run ends here."""
    job, settings = request.job, ctx.settings
    env = _cli_env(ctx)
    tempdir = os.path.realpath(tempfile.gettempdir())
    try:
        if job.cwd is not None:
            # Refused before anything is touched; resolved, so transcripts are found
            # where the CLI (which sees the real path) keeps them.
            job = job.model_copy(
                update={"cwd": workdir.place(job.cwd, settings, job.session_id, tempdir)}
            )
        default_cwd = workdir.default_cwd(settings, job.session_id, tempdir)
        plan = through_outage(
            lambda: session.plan_resume(ctx.redis, ctx.keys, job, env, default_cwd)
        )
        # Whatever the plan picked (the session's stored cwd, the default) is confined too.
        cwd = workdir.place(plan.cwd, settings, job.session_id, tempdir)
    except workdir.WorkdirRefused as exc:
        return _fail_now(publisher, exc.code, exc.message, started)
    plan = dataclasses.replace(plan, cwd=cwd)
    if plan.failure is not None:
        return _fail_now(publisher, *plan.failure, started)
    if plan.notice is not None:
        publisher.publish(error_event(*plan.notice))
    try:
        command = build_command(
            request,
            settings,
            worker_name=ctx.worker_name,
            base_env=os.environ,
            resume_claude_session_id=plan.resume_id,
            cwd=plan.cwd,
        )
    except UnknownProfileError as exc:
        return _fail_now(publisher, ErrorCode.UNKNOWN_PROFILE, str(exc), started)
    return plan, command


def _run_cli(
    request: RunRequest,
    ctx: WorkerContext,
    publisher: Publisher,
    token: str,
    started: float,
    meter: RunMeter | None = None,
) -> RunStatus:
    prepared = _prepare(request, ctx, publisher, started)
    if isinstance(prepared, RunStatus):
        return prepared
    plan, command = prepared
    job, run_id, settings = request.job, request.run_id, ctx.settings
    enable_subreaper()
    seen = RunObservations()
    cancel = CancelState()
    use = reuse.acquire(request, ctx, command, token=token, resume_id=plan.resume_id)
    proc = use.proc
    # Released in reverse: listener, lease, then the CLI (its tree killed and reaped,
    # its pipes and TMPDIR gone) unless it was kept warm for the session's next run.
    with contextlib.ExitStack() as resources:
        resources.callback(use.release)

        def on_cancel(message: CancelRequest) -> None:
            if meter is not None:
                meter.cancel_heard()
            cancel.request(message.reason, message.grace_s)
            if message.grace_s <= 0:
                proc.kill_tree()  # at once, from this thread; a soft cancel is the pump's
            proc.wake()

        talk = Interaction(
            proc,
            publisher,
            ctx.store,
            session_id=job.session_id,
            run_id=run_id,
            timeout_s=settings.approval_timeout_s,
            # A request's event leaves room in MAX_EVENT_BYTES; its record stays small.
            max_request_bytes=settings.max_event_bytes // 4,
        )

        lease = LeaseKeeper(
            ctx.store,
            session_id=job.session_id,
            run_id=run_id,
            token=token,
            renew_s=settings.lease_renew_s,
            on_lost=lambda: on_cancel(
                CancelRequest(session_id=job.session_id, run_id=run_id, reason="lease lost")
            ),
        )
        lease.start()
        resources.callback(lease.stop)
        listener = ControlListener(
            ctx.redis,
            ctx.keys.control(job.session_id, run_id),
            run_id=run_id,
            current_pid=lambda: proc.pid,
            on_cancel=on_cancel,
            on_answer=talk.announce,
            subscriber=ctx.control,
        )
        listener.subscribe()
        resources.callback(listener.stop)
        if use.warm:
            proc.send(command.stdin)  # the prompt, to the CLI that holds the conversation
        else:
            try:
                proc.spawn()
            except OSError as exc:
                message = (
                    f"cannot start the Claude CLI {settings.claude_bin!r}: "
                    f"{exc.strerror or exc}. Install it or point CLAUDE_QUEUE_CLAUDE_BIN at it."
                )
                return _fail_now(publisher, ErrorCode.CLI_NOT_FOUND, message, started)
        listener.start()  # the SUBSCRIBE sent before spawn is confirmed by now
        publisher.publish(
            Event(
                type=EventType.STARTED,
                data=StartedData(
                    worker=ctx.worker_name,
                    host=ctx.host,
                    pid=proc.pid,
                    warm=use.warm,
                    cold_reason=use.cold_reason,
                ),
            )
        )
        with contextlib.suppress(redis.RedisError):  # informational; Redis may be away
            ctx.store.record_pid(job.session_id, run_id, proc.pid, proc.start_ticks or 0)
        # A cancel that landed between dequeue and subscription left only its flag.
        grace = flag_set(ctx.store, job.session_id, run_id)
        if grace is not None:
            on_cancel(CancelRequest(session_id=job.session_id, run_id=run_id, grace_s=grace))
        idle_alive = pump(
            proc, publisher, seen, cancel, request, ctx, talk, keep_alive=ctx.warm is not None
        )
        if idle_alive and reuse.may_park(seen, cancel):
            reuse.park(ctx, use, job.session_id, token, seen)
    seen.kept_warm = use.parked
    # Reaped above: its exit code, kept (None for a CLI still running warm).
    exit_code = proc.poll() if proc.pid and not use.parked else None
    if cancel.is_set():
        seen.cancel_reason = cancel.reason or "cancelled"
    return _conclude(request, ctx, publisher, plan, command, seen, exit_code, proc, started)


def _conclude(
    request: RunRequest,
    ctx: WorkerContext,
    publisher: Publisher,
    plan: session.ResumePlan,
    command: CliCommand,
    seen: RunObservations,
    exit_code: int | None,
    proc: CliProcess,
    started: float,
) -> RunStatus:
    """Remember the conversation, then publish the closing events and `finished`."""
    job = request.job
    stderr_tail = proc.stderr_tail()
    closing: list[Event] = []
    if plan.resume_id and exit_code and session.RESUME_NOT_FOUND in stderr_tail:
        closing.append(_resume_failed(job, plan.resume_id, ctx))
    elif seen.claude_session_id:
        # Not after a failed resume: the CLI then names the dead conversation.
        try:
            session.remember(
                ctx.redis,
                ctx.keys,
                ctx.settings,
                job=job,
                run_id=request.run_id,
                cwd=plan.cwd,
                claude_session_id=seen.claude_session_id,
                env=command.env,
                resumed=plan.local_copy,
            )
        except redis.RedisError as exc:
            # Redis is away: the run still ends (its events wait in the publisher);
            # only the next run's resume is lost, and it says so.
            log.warning("session_state_not_saved", error=str(exc))
    events, status = final_events(
        seen,
        exit_code=exit_code,
        duration_s=time.monotonic() - started,
        stderr_tail=stderr_tail,
    )
    publisher.publish(*closing, *events, final_status=status)
    log.info("run_finished", status=status.value, exit_code=exit_code, events=publisher.published)
    try:
        retries.retry_failed(ctx.store, request, status, seen.api_error)  # retry_on
    except redis.RedisError as exc:
        log.warning("retry_not_submitted", error=str(exc))
    return status


def _resume_failed(job: PromptJob, resume_id: str, ctx: WorkerContext) -> Event:
    message = f"the CLI could not resume conversation {resume_id}: no transcript was found"
    if job.resume_policy == "start_fresh":
        session.forget_conversation(ctx.redis, ctx.keys, job.session_id)
        message += "; the session's next run starts a fresh conversation (resume_policy)"
    return error_event(ErrorCode.RESUME_FAILED, message, claude_session_id=resume_id)


def _cli_env(ctx: WorkerContext) -> dict[str, str]:
    """The environment the CLI will see (HOME and CLAUDE_CONFIG_DIR locate transcripts)."""
    return cli_environment(ctx.settings, os.environ)
