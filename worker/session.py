"""Per-session continuity: which conversation a run resumes, and carrying it across hosts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis
import structlog

from shared.events import ErrorCode
from shared.ids import is_absolute_cwd, is_claude_session_id
from shared.jobs import PromptJob
from shared.keys import Keys
from shared.settings import Settings
from worker import transcripts

log = structlog.get_logger(__name__)

# What the CLI prints (stderr) when --resume names a conversation it cannot find.
RESUME_NOT_FOUND = "No conversation found with session ID"


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """How to start the CLI for this run."""

    cwd: str
    resume_id: str | None
    # Set when the conversation cannot be resumed and the policy says fail.
    failure: tuple[ErrorCode, str] | None = None
    # Set when resuming was abandoned under the start_fresh policy (reported, not fatal).
    notice: tuple[ErrorCode, str] | None = None
    # The local copy of the conversation this run resumes from, as restore left it.
    local_copy: transcripts.LocalCopy | None = None


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


def plan_resume(
    client: redis.Redis, keys: Keys, job: PromptJob, env: Mapping[str, str], default_cwd: str
) -> ResumePlan:
    """Decide cwd and --resume, restoring the transcript here if another host wrote it.

    What the session's hashes hold is validated first: a value that is not a UUID
    or an absolute path is never used; the run fails `corrupt_state` (or, under
    resume_policy start_fresh, says so and starts a fresh conversation).
    """
    state = _decode(cast(dict[bytes, bytes], client.hgetall(keys.session_state(job.session_id))))
    stored_cwd = state.get("cwd")
    if job.cwd is None and stored_cwd and not is_absolute_cwd(stored_cwd):
        problem = f"the session's stored working directory {stored_cwd!r} is not an absolute path"
        return _corrupt(job, default_cwd, problem, remedy="submit with an explicit cwd")
    cwd = job.cwd or stored_cwd or default_cwd
    previous = state.get("claude_session_id")
    if job.new_conversation or not previous:
        return ResumePlan(cwd=cwd, resume_id=None)
    try:
        outcome, local_copy = _restore(client, keys, job, env, cwd, previous)
    except transcripts.CorruptStateError as exc:
        return _corrupt(job, cwd, str(exc))
    if outcome is not transcripts.Restore.MISSING:
        return ResumePlan(cwd=cwd, resume_id=previous, local_copy=local_copy)
    message = (
        f"cannot resume conversation {previous}: its transcript is neither on this worker "
        "nor stored in Redis (it may have expired or been too large to keep)"
    )
    if job.resume_policy == "start_fresh":
        return ResumePlan(
            cwd=cwd,
            resume_id=None,
            notice=(ErrorCode.TRANSCRIPT_MISSING, message + "; starting a fresh conversation"),
        )
    return ResumePlan(cwd=cwd, resume_id=None, failure=(ErrorCode.TRANSCRIPT_MISSING, message))


def _restore(
    client: redis.Redis,
    keys: Keys,
    job: PromptJob,
    env: Mapping[str, str],
    cwd: str,
    previous: str,
) -> tuple[transcripts.Restore, transcripts.LocalCopy | None]:
    """Put the stored transcript where the CLI looks; CorruptStateError if Redis lies."""
    if not is_claude_session_id(previous):
        raise transcripts.CorruptStateError(
            f"the session's stored conversation id {previous!r} is not a UUID"
        )
    path = transcripts.transcript_path(env, cwd, previous)
    outcome, local_copy = transcripts.restore(
        client, keys.transcript(job.session_id), path, claude_session_id=previous
    )
    log.info("transcript_restore", outcome=outcome.value, claude_session_id=previous)
    return outcome, local_copy


def _corrupt(
    job: PromptJob, cwd: str, problem: str, *, remedy: str = "submit with new_conversation=True"
) -> ResumePlan:
    """The session's stored state failed validation: fail, or start fresh if the job says so."""
    log.warning("session_state_corrupt", problem=problem)
    message = f"cannot resume this session: {problem} (corrupt session state in Redis)"
    if job.resume_policy == "start_fresh":
        notice = (ErrorCode.CORRUPT_STATE, message + "; starting a fresh conversation")
        return ResumePlan(cwd=cwd, resume_id=None, notice=notice)
    message += f"; {remedy} to start over"
    return ResumePlan(cwd=cwd, resume_id=None, failure=(ErrorCode.CORRUPT_STATE, message))


def remember(
    client: redis.Redis,
    keys: Keys,
    settings: Settings,
    *,
    job: PromptJob,
    run_id: str,
    cwd: str,
    claude_session_id: str,
    env: Mapping[str, str],
    resumed: transcripts.LocalCopy | None = None,
) -> None:
    """After a run: store the conversation id, cwd and transcript for the next run
    (`resumed`: the copy the run resumed from, see transcripts.find_written).

    A conversation the CLI never wrote to disk cannot be resumed, so the session
    keeps pointing at the previous one. So does a conversation id that is not a
    UUID: the CLI's own output is data, never a file name or a glob.
    """
    if not is_claude_session_id(claude_session_id) or not is_absolute_cwd(cwd):
        log.warning("conversation_not_remembered", claude_session_id=claude_session_id, cwd=cwd)
        return
    path = transcripts.find_written(env, cwd, claude_session_id, resumed)
    path = path or transcripts.find_local(env, cwd, claude_session_id)
    if path is None:
        log.warning("transcript_not_written", claude_session_id=claude_session_id)
        return
    # The transcript and the state in one MULTI: one round trip (this runs before the
    # run's `finished`), and no state naming a transcript that was not stored.
    with client.pipeline() as pipe:
        saved = transcripts.save(
            pipe,
            keys.transcript(job.session_id),
            path,
            claude_session_id=claude_session_id,
            max_bytes=settings.transcript_max_bytes,
            ttl_s=settings.event_log_ttl_s,
        )
        state_key = keys.session_state(job.session_id)
        pipe.hset(
            state_key,
            mapping={
                "claude_session_id": claude_session_id,
                "cwd": cwd,
                "last_run_id": run_id,
                "updated_at": time.time(),
                "transcript_bytes": saved.compressed if saved.stored else 0,
            },
        )
        pipe.expire(state_key, settings.event_log_ttl_s)
        pipe.execute()
    if not saved.stored and saved.size:
        log.warning("transcript_too_large", size=saved.size, compressed=saved.compressed)


def forget_conversation(client: redis.Redis, keys: Keys, session_id: str) -> None:
    """A fresh conversation starts: the old one is not resumed any more."""
    client.hdel(keys.session_state(session_id), "claude_session_id")
