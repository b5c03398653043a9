"""The environment the Claude CLI runs with: an allow-list, never the worker's own. Pure.

The CLI and every tool it starts (a Bash tool included) see this environment, and a
prompt can make a tool print it into the event stream. So the CLI gets only what it
needs to run and reach its model, plus what the operator names explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.envnames import ENV_PREFIX
from shared.settings import Settings

# Every worker environment variable the CLI gets by default. A trailing "*" matches
# a prefix. Everything else (cloud credentials such as AWS_SECRET_ACCESS_KEY or
# AWS_SESSION_TOKEN, REDIS_PASSWORD, GITHUB_TOKEN, CLAUDE_QUEUE_*) stays with the
# worker unless named in CLAUDE_QUEUE_CLI_ENV_PASSTHROUGH or set in CLAUDE_QUEUE_EXTRA_ENV.
CLI_ENV_ALLOW_LIST: tuple[str, ...] = (
    # process basics
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "TMPDIR",
    "TZ",
    # locale
    "LANG",
    "LANGUAGE",
    "LC_*",
    # network: proxies and extra CA certificates (the CLI is a Node program)
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    # where the CLI keeps its configuration, login and transcripts
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "CLAUDE_CONFIG_DIR",
    # the CLI's own settings: API key, base URL, models, provider switches
    # (CLAUDE_CODE_USE_BEDROCK / _VERTEX / _FOUNDRY), feature toggles
    "ANTHROPIC_*",
    "CLAUDE_CODE_*",
    "DISABLE_*",
    # documented CLI tuning knobs
    "API_TIMEOUT_MS",
    "BASH_DEFAULT_TIMEOUT_MS",
    "BASH_MAX_TIMEOUT_MS",
    "BASH_MAX_OUTPUT_LENGTH",
    "MAX_THINKING_TOKENS",
    "MCP_TIMEOUT",
    "MCP_TOOL_TIMEOUT",
    # cloud regions the CLI requires for Bedrock / Vertex; regions, not credentials
    "AWS_REGION",
    "CLOUD_ML_REGION",
    "VERTEX_REGION_*",
)


# The allow-list split once: exact names, and the prefixes of the "*" entries (one
# str.startswith call takes them all). Checking each entry per name was ~1.5 ms a run.
_EXACT_NAMES = frozenset(entry for entry in CLI_ENV_ALLOW_LIST if not entry.endswith("*"))
_PREFIXES = tuple(entry[:-1] for entry in CLI_ENV_ALLOW_LIST if entry.endswith("*"))


def allowed_by_default(name: str) -> bool:
    """Whether the allow-list passes `name` from the worker's environment to the CLI."""
    return name in _EXACT_NAMES or name.startswith(_PREFIXES)


def _is_worker_setting(name: str) -> bool:
    # pydantic-settings reads names case-insensitively, so claude_queue_redis_url counts too.
    return name.upper().startswith(ENV_PREFIX)


def cli_environment(settings: Settings, worker_env: Mapping[str, str]) -> dict[str, str]:
    """The CLI's environment: allow-listed and passthrough names from `worker_env`, then extra_env.

    No CLAUDE_QUEUE_* name is ever included; the caller adds the run markers last.
    """
    passthrough = set(settings.cli_env_passthrough)
    env = {
        name: value
        for name, value in worker_env.items()
        if not _is_worker_setting(name) and (name in passthrough or allowed_by_default(name))
    }
    env.update(
        {name: value for name, value in settings.extra_env.items() if not _is_worker_setting(name)}
    )
    return env
