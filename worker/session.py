"""Per-session continuity: which conversation a run resumes, and carrying it across hosts."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis
import structlog

from shared.events import ErrorCode
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


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


def plan_resume(
    client: redis.Redis, keys: Keys, job: PromptJob, env: Mapping[str, str], default_cwd: str
) -> ResumePlan:
    """Decide cwd and --resume, restoring the transcript here if another host wrote it."""
    state = _decode(cast(dict[bytes, bytes], client.hgetall(keys.session_state(job.session_id))))
    cwd = job.cwd or state.get("cwd") or default_cwd
    previous = state.get("claude_session_id")
    if job.new_conversation or not previous:
        return ResumePlan(cwd=cwd, resume_id=None)
    path = transcripts.transcript_path(env, cwd, previous)
    outcome = transcripts.restore(
        client, keys.transcript(job.session_id), path, claude_session_id=previous
    )
    log.info("transcript_restore", outcome=outcome.value, claude_session_id=previous)
    if outcome is not transcripts.Restore.MISSING:
        return ResumePlan(cwd=cwd, resume_id=previous)
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
) -> None:
    """After a run: store the conversation id, cwd and transcript for the next run.

    A conversation the CLI never wrote to disk cannot be resumed, so the session
    keeps pointing at the previous one.
    """
    path = transcripts.find_local(env, cwd, claude_session_id)
    if path is None:
        log.warning("transcript_not_written", claude_session_id=claude_session_id)
        return
    saved = transcripts.save(
        client,
        keys.transcript(job.session_id),
        path,
        claude_session_id=claude_session_id,
        max_bytes=settings.transcript_max_bytes,
        ttl_s=settings.event_log_ttl_s,
    )
    if not saved.stored and saved.size:
        log.warning("transcript_too_large", size=saved.size, compressed=saved.compressed)
    state_key = keys.session_state(job.session_id)
    client.hset(
        state_key,
        mapping={
            "claude_session_id": claude_session_id,
            "cwd": cwd,
            "last_run_id": run_id,
            "updated_at": time.time(),
            "transcript_bytes": saved.compressed if saved.stored else 0,
        },
    )
    client.expire(state_key, settings.event_log_ttl_s)


def forget_conversation(client: redis.Redis, keys: Keys, session_id: str) -> None:
    """A fresh conversation starts: the old one is not resumed any more."""
    client.hdel(keys.session_state(session_id), "claude_session_id")


def cwd_problem(cwd: str) -> str | None:
    """Why the CLI cannot start in cwd, or None."""
    if not os.path.isdir(cwd):
        return f"working directory {cwd!r} does not exist on this worker"
    return None
