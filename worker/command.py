"""Build the CLI invocation (argv, environment, stdin) for one run. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from shared.jobs import RunRequest
from shared.settings import Settings
from worker import cliproto
from worker.cli_env import cli_environment
from worker.markers import RUN_MARKER_ENV, SCOPE_MARKER_ENV


class UnknownProfileError(ValueError):
    """The job names a permission profile this worker does not define."""


@dataclass(frozen=True, slots=True)
class CliCommand:
    argv: list[str]
    env: dict[str, str]
    stdin: bytes
    cwd: str | None


def render_system_prompt(template: str, values: Mapping[str, str]) -> str:
    """Fill `{placeholders}`; unknown placeholders are left as written."""

    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    return template.format_map(_Keep(values))


def prompt_text(prompt: str, context: Mapping[str, object] | None) -> str:
    """The prompt as the CLI gets it, with any context first as a <context> JSON block."""
    if not context:
        return prompt
    block = json.dumps(context, ensure_ascii=False, indent=2, sort_keys=True)
    return f"<context>\n{block}\n</context>\n\n{prompt}"


def build_stdin(prompt: str, context: Mapping[str, object] | None) -> bytes:
    """The first stdin line: the prompt as a stream-json `user` message."""
    return cliproto.user_message(prompt_text(prompt, context))


def build_command(
    request: RunRequest,
    settings: Settings,
    *,
    worker_name: str,
    base_env: Mapping[str, str],
    resume_claude_session_id: str | None = None,
    cwd: str | None = None,
) -> CliCommand:
    """Argv, env and stdin for a run. Raises UnknownProfileError for an unknown profile.

    `base_env` is the worker's environment; the CLI gets only its allow-listed part
    (worker.cli_env). `cwd` overrides the job's (e.g. the session's previous cwd, so a
    resume finds its transcript).
    """
    job = request.job
    cwd = cwd or job.cwd
    profile_name = job.profile or settings.default_profile
    profile = settings.profiles.get(profile_name)
    if profile is None:
        raise UnknownProfileError(
            f"unknown permission profile {profile_name!r}; this worker knows "
            f"{', '.join(sorted(settings.profiles))}"
        )
    system_prompt = render_system_prompt(
        settings.system_prompt_template,
        {
            "session_id": job.session_id,
            "run_id": request.run_id,
            "worker": worker_name,
            "cwd": cwd or "",
            "model": job.model or "",
            "profile": profile_name,
        },
    )
    # Stream-json on stdin, not -p: the prompt arrives as a message, and answers to
    # permission requests and interrupts can follow it on the same pipe.
    argv = [
        settings.claude_bin,
        "--input-format=stream-json",
        "--output-format=stream-json",
        "--verbose",
        f"--permission-mode={profile.permission_mode}",
    ]
    if profile.approval == "ask":
        argv.append("--permission-prompt-tool=stdio")
    if system_prompt:
        argv.append(f"--append-system-prompt={system_prompt}")
    if job.model:
        argv.append(f"--model={job.model}")
    if profile.allowed_tools:
        argv.append(f"--allowed-tools={','.join(profile.allowed_tools)}")
    if profile.disallowed_tools:
        argv.append(f"--disallowed-tools={','.join(profile.disallowed_tools)}")
    if job.include_partial_messages:
        argv.append("--include-partial-messages")
    if job.max_turns is not None:
        argv.append(f"--max-turns={job.max_turns}")
    if resume_claude_session_id:
        argv.append(f"--resume={resume_claude_session_id}")

    env = cli_environment(settings, base_env)
    env[RUN_MARKER_ENV] = request.run_id
    env[SCOPE_MARKER_ENV] = settings.scope
    return CliCommand(argv=argv, env=env, stdin=build_stdin(job.prompt, job.context), cwd=cwd)
