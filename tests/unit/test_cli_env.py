"""Unit tests for worker.cli_env: the allow-listed environment the CLI runs with."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.jobs import PromptJob, RunRequest
from shared.settings import Settings
from worker import markers
from worker.cli_env import CLI_ENV_ALLOW_LIST, allowed_by_default, cli_environment
from worker.command import build_command

WORKER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin",
    "HOME": "/home/worker",
    "USER": "worker",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "https_proxy": "http://proxy:3128",
    "NODE_EXTRA_CA_CERTS": "/etc/ssl/corp.pem",
    "ANTHROPIC_API_KEY": "sk-ant-needed",
    "ANTHROPIC_BASE_URL": "http://gateway",
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "CLAUDE_CONFIG_DIR": "/srv/claude-config",
    "DISABLE_AUTOUPDATER": "1",
    "AWS_REGION": "eu-west-1",
    # secrets of the worker and its host
    "AWS_ACCESS_KEY_ID": "AKIA-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_SESSION_TOKEN": "aws-session-secret",
    "REDIS_PASSWORD": "redis-secret",
    "GITHUB_TOKEN": "gh-secret",
    "DATABASE_URL": "postgres://u:db-secret@db/app",
    "CLAUDE_QUEUE_REDIS_URL": "redis://:cq-secret@redis:6379/0",
    "claude_queue_redis_url": "redis://:cq-lower-secret@redis:6379/0",
    "CLAUDECODE": "1",
}
SECRETS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "REDIS_PASSWORD",
    "GITHUB_TOKEN",
    "DATABASE_URL",
    "CLAUDE_QUEUE_REDIS_URL",
    "claude_queue_redis_url",
    "CLAUDECODE",
}


def make_settings(**overrides: Any) -> Settings:
    return Settings(redis_url="redis://localhost:6379/0", **overrides)


def test_only_allow_listed_names_reach_the_cli() -> None:
    env = cli_environment(make_settings(), WORKER_ENV)
    assert SECRETS.isdisjoint(env), SECRETS & set(env)
    assert not [value for value in env.values() if "secret" in value]
    assert env == {name: WORKER_ENV[name] for name in WORKER_ENV if name not in SECRETS}


def test_passthrough_names_are_added_and_missing_ones_ignored() -> None:
    settings_obj = make_settings(
        cli_env_passthrough=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "NOT_SET_ANYWHERE")
    )
    env = cli_environment(settings_obj, WORKER_ENV)
    assert env["AWS_ACCESS_KEY_ID"] == "AKIA-secret"
    assert env["AWS_SECRET_ACCESS_KEY"] == "aws-secret"
    assert "NOT_SET_ANYWHERE" not in env
    assert "AWS_SESSION_TOKEN" not in env  # only the names listed
    assert "REDIS_PASSWORD" not in env


def test_extra_env_wins_and_never_carries_worker_settings() -> None:
    settings_obj = make_settings(
        cli_env_passthrough=("GITHUB_TOKEN",),
        extra_env={
            "PATH": "/opt/tools/bin",
            "GITHUB_TOKEN": "gh-for-the-cli",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "CLAUDE_QUEUE_REDIS_URL": "redis://:smuggled@redis/0",
            "Claude_Queue_Key_Prefix": "smuggled",
        },
    )
    env = cli_environment(settings_obj, WORKER_ENV)
    assert env["PATH"] == "/opt/tools/bin"
    assert env["GITHUB_TOKEN"] == "gh-for-the-cli"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert not [name for name in env if name.upper().startswith("CLAUDE_QUEUE_")]


def test_prefix_entries_match_prefixes_and_exact_entries_match_exactly() -> None:
    assert allowed_by_default("LC_CTYPE")
    assert allowed_by_default("ANTHROPIC_AUTH_TOKEN")
    assert allowed_by_default("CLAUDE_CODE_OAUTH_TOKEN")
    assert allowed_by_default("VERTEX_REGION_CLAUDE_3_5_HAIKU")
    assert not allowed_by_default("PATHEXT")  # "PATH" is a name, not a prefix
    assert not allowed_by_default("HOMEBREW_GITHUB_API_TOKEN")
    assert not allowed_by_default("AWS_DEFAULT_PROFILE")
    assert not allowed_by_default("GOOGLE_APPLICATION_CREDENTIALS")
    assert not allowed_by_default("path")  # names are case-sensitive on Linux


def _listed(name: str) -> bool:
    """The allow-list read entry by entry, as its comment states it."""
    return any(
        name.startswith(entry[:-1]) if entry.endswith("*") else name == entry
        for entry in CLI_ENV_ALLOW_LIST
    )


@given(
    st.sampled_from([e.rstrip("*") for e in CLI_ENV_ALLOW_LIST]) | st.just(""),
    st.text(max_size=12),
    st.booleans(),
)
def test_the_check_admits_exactly_what_the_list_names(stem: str, rest: str, cut: bool) -> None:
    # Names near the entries: an entry, an entry's prefix, an entry plus anything.
    name = stem[: len(stem) // 2] if cut else stem + rest
    assert allowed_by_default(name) == _listed(name)


def test_allow_list_never_admits_worker_settings() -> None:
    for entry in CLI_ENV_ALLOW_LIST:
        assert not "CLAUDE_QUEUE_".startswith(entry.rstrip("*")), entry
        assert not entry.upper().startswith("CLAUDE_QUEUE_"), entry


def test_build_command_env_is_the_cli_environment_plus_markers() -> None:
    """The runner locates transcripts with cli_environment; the CLI must see the same."""
    settings_obj = make_settings(extra_env={"HOME": "/srv/cli-home"})
    request = RunRequest(
        run_id="0" * 32, submitted_at=0.0, job=PromptJob(session_id="s", prompt="p")
    )
    command = build_command(request, settings_obj, worker_name="w", base_env=WORKER_ENV)
    marker_names = {markers.RUN_MARKER_ENV, markers.SCOPE_MARKER_ENV}
    without_markers = {k: v for k, v in command.env.items() if k not in marker_names}
    assert without_markers == cli_environment(settings_obj, WORKER_ENV)
    assert command.env["HOME"] == "/srv/cli-home"
    assert command.env[markers.RUN_MARKER_ENV] == "0" * 32


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=200)
@given(worker_env=st.dictionaries(env_names, st.text(max_size=8), max_size=30))
def test_result_holds_only_allowed_or_configured_names(worker_env: dict[str, str]) -> None:
    settings_obj = make_settings(cli_env_passthrough=("EXTRA_ONE",), extra_env={"MLFLOW_X": "1"})
    env = cli_environment(settings_obj, worker_env)
    for name in env:
        assert not name.upper().startswith("CLAUDE_QUEUE_")
        assert allowed_by_default(name) or name in ("EXTRA_ONE", "MLFLOW_X"), name
    for name, value in worker_env.items():
        if allowed_by_default(name) and not name.upper().startswith("CLAUDE_QUEUE_"):
            assert env.get(name) == value
