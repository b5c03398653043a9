"""Unit tests for worker.command: the CLI argv, environment and stdin of one run."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.errors import InvalidJobError
from producer.submission import validate_job
from shared.jobs import PromptJob, RunRequest
from shared.profiles import PermissionProfile
from shared.settings import Settings
from worker import markers
from worker.command import (
    CliCommand,
    UnknownProfileError,
    build_command,
    build_stdin,
    prompt_text,
    render_system_prompt,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
CLAUDE_BIN = "/opt/claude/bin/claude"
# Boolean flags: the only argv entries without a value.
BARE_FLAGS = {"--verbose", "--include-partial-messages"}


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": "redis://:hunter2-secret@redis.internal:6379/0",
        "queue_name": "q",
        "key_prefix": "cq",
        "claude_bin": CLAUDE_BIN,
        "system_prompt_template": "worker={worker} session={session_id} run={run_id}",
        "extra_env": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    }
    values.update(overrides)
    return Settings(**values)


def make_request(run_id: str = RUN_ID, **job_fields: Any) -> RunRequest:
    fields: dict[str, Any] = {"session_id": "sess-1", "prompt": "Say hello."}
    fields.update(job_fields)
    return RunRequest(run_id=run_id, submitted_at=1_764_000_000.0, job=PromptJob(**fields))


def build(
    request: RunRequest | None = None,
    settings_obj: Settings | None = None,
    *,
    base_env: dict[str, str] | None = None,
    resume: str | None = None,
) -> CliCommand:
    return build_command(
        request or make_request(),
        settings_obj or make_settings(),
        worker_name="worker-7",
        base_env=base_env if base_env is not None else {"PATH": "/usr/bin"},
        resume_claude_session_id=resume,
    )


def stdin_text(command: CliCommand) -> str:
    """The prompt the CLI gets: the content of the one stream-json user message on stdin."""
    assert command.stdin.endswith(b"\n") and command.stdin.count(b"\n") == 1
    line = json.loads(command.stdin)
    assert line["type"] == "user" and line["message"]["role"] == "user"
    assert line["parent_tool_use_id"] is None
    content = line["message"]["content"]
    assert isinstance(content, str)
    return content


def flag_values(argv: list[str], flag: str) -> list[str]:
    prefix = f"{flag}="
    return [arg[len(prefix) :] for arg in argv if arg.startswith(prefix)]


def assert_argv_shape(argv: list[str]) -> None:
    assert argv[:4] == [
        CLAUDE_BIN,
        "--input-format=stream-json",
        "--output-format=stream-json",
        "--verbose",
    ]
    assert "-p" not in argv
    for arg in argv[1:]:
        assert arg in BARE_FLAGS or (arg.startswith("--") and "=" in arg), arg


# --------------------------------------------------------------------------- argv


def test_argv_starts_with_bin_and_stream_json_flags() -> None:
    command = build()
    assert_argv_shape(command.argv)
    assert command.argv[0] == CLAUDE_BIN


def test_every_value_flag_uses_equals_form_with_all_options() -> None:
    command = build(
        make_request(
            model="claude-sonnet-4-5",
            profile="bash",
            include_partial_messages=True,
            max_turns=7,
            cwd="/srv/project",
        ),
        resume="c96ee454-55b7-4912-add4-2cc5ac471d63",
    )
    assert_argv_shape(command.argv)
    assert flag_values(command.argv, "--model") == ["claude-sonnet-4-5"]
    assert flag_values(command.argv, "--max-turns") == ["7"]
    assert flag_values(command.argv, "--resume") == ["c96ee454-55b7-4912-add4-2cc5ac471d63"]
    assert "--include-partial-messages" in command.argv
    assert command.cwd == "/srv/project"
    # no flag is followed by a separate value argument
    assert not [a for a in command.argv[1:] if not a.startswith("-")]


def test_cwd_override_wins_over_job_cwd() -> None:
    request = make_request(cwd="/srv/job")
    settings_obj = make_settings(system_prompt_template="cwd={cwd}")
    overridden = build_command(
        request, settings_obj, worker_name="w", base_env={}, cwd="/srv/previous"
    )
    assert overridden.cwd == "/srv/previous"
    assert flag_values(overridden.argv, "--append-system-prompt") == ["cwd=/srv/previous"]
    plain = build_command(request, settings_obj, worker_name="w", base_env={})
    assert plain.cwd == "/srv/job"
    assert flag_values(plain.argv, "--append-system-prompt") == ["cwd=/srv/job"]


def test_optional_flags_absent_by_default() -> None:
    argv = build().argv
    assert not [a for a in argv if a.startswith(("--resume", "--model", "--max-turns"))]
    assert "--include-partial-messages" not in argv
    assert build().cwd is None


def test_resume_only_when_given() -> None:
    assert flag_values(build(resume="abc-123").argv, "--resume") == ["abc-123"]
    assert flag_values(build(resume=None).argv, "--resume") == []
    assert flag_values(build(resume="").argv, "--resume") == []


def test_max_turns_and_partial_messages_when_asked() -> None:
    argv = build(make_request(max_turns=1, include_partial_messages=True)).argv
    assert flag_values(argv, "--max-turns") == ["1"]
    assert argv.count("--include-partial-messages") == 1


# --------------------------------------------------------------------------- prompt


@pytest.mark.parametrize(
    "prompt",
    [
        "Say hello.",
        "--dangerously-skip-permissions",
        "--permission-mode=bypassPermissions",
        "-p",
        "--help --version",
        "$(rm -rf /) ; `id` 'quoted' \"double\"",
        "multi\nline\n\nprompt ünïcødé ✓",
    ],
)
def test_prompt_goes_to_stdin_never_argv(prompt: str) -> None:
    command = build(make_request(prompt=prompt))
    assert stdin_text(command) == prompt
    assert command.argv.count("-p") == 0
    if prompt != "-p":
        assert not [arg for arg in command.argv if prompt in arg]
    assert not [a for a in command.argv if a.startswith("--dangerously")]
    assert len(flag_values(command.argv, "--permission-mode")) == 1
    assert flag_values(command.argv, "--permission-mode") == ["default"]


@settings(max_examples=60)
@given(st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and "\x00" not in s))
def test_any_prompt_is_stdin_verbatim(body: str) -> None:
    prompt = f"PROMPT-MARKER {body}"
    command = build(make_request(prompt=prompt))
    assert stdin_text(command) == prompt
    assert not [arg for arg in command.argv if "PROMPT-MARKER" in arg]


def test_context_is_prepended_as_json_block() -> None:
    context = {"ticket": "ABC-1", "files": ["a.py", "b.py"], "nested": {"ü": 1}}
    command = build(make_request(prompt="Fix it.", context=context))
    text = stdin_text(command)
    assert text.startswith("<context>\n")
    head, prompt = text.split("\n</context>\n\n", 1)
    assert prompt == "Fix it."
    assert json.loads(head.removeprefix("<context>\n")) == context
    assert "ü" in head  # not ascii-escaped
    assert "Fix it." not in " ".join(command.argv)


def test_context_containing_closing_tag_stays_valid_json() -> None:
    context = {"note": "</context>\n\ninjected"}
    text = prompt_text("real prompt", context)
    block = text.removeprefix("<context>\n").rsplit("\n</context>\n\n", 1)[0]
    assert json.loads(block) == context
    assert text.endswith("\n</context>\n\nreal prompt")


def test_no_context_means_prompt_only() -> None:
    assert prompt_text("hi", None) == "hi"
    assert stdin_text(build(make_request(prompt="hi", context=None))) == "hi"
    assert build_stdin("hi", None) == build(make_request(prompt="hi", context=None)).stdin


def test_context_with_lone_surrogate_is_refused_before_the_worker() -> None:
    fields = {"session_id": "s1", "prompt": "hi", "context": {"k": "bad \ud800 text"}}
    with pytest.raises(InvalidJobError, match="context"):
        validate_job(make_settings(), None, fields)


# Text with lone surrogates: valid after json.loads, not encodable as UTF-8.
risky_text = st.text(
    st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=())
    | st.characters(),
    max_size=12,
)


@settings(max_examples=80)
@given(prompt=risky_text, context_value=risky_text)
def test_a_job_that_validates_always_builds(prompt: str, context_value: str) -> None:
    fields = {"session_id": "s1", "prompt": f"p{prompt}", "context": {"k": context_value}}
    try:
        job = validate_job(make_settings(), None, fields)
    except InvalidJobError:
        return  # refused up front: fine
    command = build(RunRequest(run_id=RUN_ID, submitted_at=0.0, job=job))
    assert stdin_text(command).endswith(job.prompt)


# --------------------------------------------------------------------------- profiles


def test_default_profile_is_readonly() -> None:
    argv = build().argv
    assert flag_values(argv, "--permission-mode") == ["default"]
    assert flag_values(argv, "--allowed-tools") == ["Read,Glob,Grep"]
    assert flag_values(argv, "--disallowed-tools") == []


@pytest.mark.parametrize(
    ("profile", "mode", "tools"),
    [
        ("readonly", "default", "Read,Glob,Grep"),
        ("edit", "acceptEdits", "Read,Glob,Grep,Edit,Write"),
        ("bash", "acceptEdits", "Bash,Read,Glob,Grep,Edit,Write"),
    ],
)
def test_profile_maps_to_permission_flags(profile: str, mode: str, tools: str) -> None:
    argv = build(make_request(profile=profile)).argv
    assert flag_values(argv, "--permission-mode") == [mode]
    assert flag_values(argv, "--allowed-tools") == [tools]


def test_custom_profile_with_disallowed_tools_and_default() -> None:
    custom = make_settings(
        profiles={
            "locked": PermissionProfile(
                permission_mode="plan", allowed_tools=(), disallowed_tools=("Bash", "Write")
            ),
            "other": PermissionProfile(),
        },
        default_profile="locked",
    )
    argv = build(settings_obj=custom).argv
    assert flag_values(argv, "--permission-mode") == ["plan"]
    assert flag_values(argv, "--allowed-tools") == []
    assert flag_values(argv, "--disallowed-tools") == ["Bash,Write"]


def test_unknown_profile_raises_naming_known_profiles() -> None:
    with pytest.raises(UnknownProfileError) as info:
        build(make_request(profile="superuser"))
    message = str(info.value)
    assert "superuser" in message
    for known in ("bash", "edit", "readonly"):
        assert known in message
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- system prompt


def test_system_prompt_placeholders_are_filled() -> None:
    template = "w={worker} s={session_id} r={run_id} c={cwd} m={model} p={profile} keep={unknown}"
    command = build(
        make_request(cwd="/srv/x", model="claude-opus-5-5", profile="edit"),
        make_settings(system_prompt_template=template),
    )
    assert flag_values(command.argv, "--append-system-prompt") == [
        f"w=worker-7 s=sess-1 r={RUN_ID} c=/srv/x m=claude-opus-5-5 p=edit keep={{unknown}}"
    ]


def test_system_prompt_missing_values_are_empty() -> None:
    command = build(settings_obj=make_settings(system_prompt_template="[{cwd}][{model}]"))
    assert flag_values(command.argv, "--append-system-prompt") == ["[][]"]


def test_empty_system_prompt_template_adds_no_flag() -> None:
    command = build(settings_obj=make_settings(system_prompt_template=""))
    assert flag_values(command.argv, "--append-system-prompt") == []


def test_default_system_prompt_template_mentions_session_and_run() -> None:
    settings_obj = Settings(claude_bin=CLAUDE_BIN)
    (prompt,) = flag_values(build(settings_obj=settings_obj).argv, "--append-system-prompt")
    assert "sess-1" in prompt
    assert RUN_ID in prompt
    assert "worker-7" in prompt
    assert "{" not in prompt


def test_render_system_prompt_leaves_unknown_and_escaped_braces() -> None:
    assert render_system_prompt("{a} {b} {{c}}", {"a": "A"}) == "A {b} {c}"


# --------------------------------------------------------------------------- environment


# Markers the worker itself sets on the CLI (proctree finds a run's processes by them).
MARKER_ENV_NAMES = {value for name, value in vars(markers).items() if name.endswith("_MARKER_ENV")}


def test_worker_private_env_is_removed() -> None:
    base_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/worker",
        "CLAUDE_QUEUE_REDIS_URL": "redis://:hunter2-secret@redis.internal:6379/0",
        "CLAUDE_QUEUE_KEY_PREFIX": "leaky-prefix",
        "CLAUDE_QUEUE_RUN_ID": "ffffffffffffffffffffffffffffffff",  # from an outer run
        "ANTHROPIC_API_KEY": "sk-ant-kept",
        # The worker's own secrets: not on the CLI's allow-list.
        "AWS_SECRET_ACCESS_KEY": "aws-leaked",
        "REDIS_PASSWORD": "redis-leaked",
        "GITHUB_TOKEN": "gh-leaked",
    }
    env = build(base_env=base_env).env
    private = {k for k in env if k.startswith("CLAUDE_QUEUE_")}
    assert private <= MARKER_ENV_NAMES, private - MARKER_ENV_NAMES
    assert "CLAUDE_QUEUE_REDIS_URL" not in env
    assert "CLAUDE_QUEUE_KEY_PREFIX" not in env
    assert env[markers.RUN_MARKER_ENV] == RUN_ID
    assert not [v for v in env.values() if "hunter2" in v or v == "leaky-prefix"]
    assert not [v for v in env.values() if v.endswith("-leaked")]
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["HOME"] == "/home/worker"
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-kept"


def test_settings_redis_password_never_reaches_cli() -> None:
    command = build(base_env={"PATH": "/usr/bin"})
    everything = " ".join([*command.argv, *command.env.values(), command.stdin.decode()])
    assert "hunter2" not in everything


def test_extra_env_added_and_run_marker_set() -> None:
    env = build(
        make_request(run_id="a" * 32),
        make_settings(extra_env={"MLFLOW_TRACKING_URI": "http://m:5000", "PATH": "/extra"}),
        base_env={"PATH": "/usr/bin", "LANG": "C.UTF-8"},
    ).env
    assert env["MLFLOW_TRACKING_URI"] == "http://m:5000"
    assert env["PATH"] == "/extra"  # extra_env wins over the worker's env
    assert env["LANG"] == "C.UTF-8"
    assert env["CLAUDE_QUEUE_RUN_ID"] == "a" * 32


def test_extra_env_cannot_override_run_marker() -> None:
    env = build(settings_obj=make_settings(extra_env={"CLAUDE_QUEUE_RUN_ID": "spoofed"})).env
    assert env["CLAUDE_QUEUE_RUN_ID"] == RUN_ID


def test_base_env_is_not_mutated() -> None:
    base_env = {"PATH": "/usr/bin", "CLAUDE_QUEUE_REDIS_URL": "redis://x"}
    snapshot = dict(base_env)
    build(base_env=base_env)
    assert base_env == snapshot


def test_building_a_command_loads_no_ctypes() -> None:
    """The command builder is pure: importing it must not pull in proctree's ctypes."""
    probe = "import sys, worker.command; print('ctypes' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_only_an_asking_profile_routes_permission_prompts_to_stdin() -> None:
    asking = build(make_request(profile="ask"))
    assert flag_values(asking.argv, "--permission-prompt-tool") == ["stdio"]
    assert flag_values(asking.argv, "--allowed-tools") == ["Read,Glob,Grep"]
    for profile in ("readonly", "edit", "bash"):
        argv = build(make_request(profile=profile)).argv
        assert flag_values(argv, "--permission-prompt-tool") == [], profile
