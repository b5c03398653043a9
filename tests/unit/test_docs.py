"""The README and compose.yaml tell the truth about the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.events import ErrorCode, EventType, RunStatus
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    missing = [
        f"CLAUDE_QUEUE_{name.upper()}"
        for name in Settings.model_fields
        if f"`CLAUDE_QUEUE_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_event_type_status_and_error_code_is_documented() -> None:
    for event_type in EventType:
        assert f"| `{event_type.value}` |" in README, event_type
    for status in RunStatus:
        assert f"`{status.value}`" in README, status
    for code in ErrorCode:
        assert f"`{code.value}`" in README, code


def test_readme_names_the_two_commands_and_ci_runs_them() -> None:
    assert "make demo" in README
    assert "make test" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_compose_has_aof_redis_and_a_scalable_worker() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]
    worker = services["worker"]
    assert worker["command"][:2] == ["claude-queue", "worker"]
    assert "container_name" not in worker  # a fixed name would prevent --scale
    assert worker["environment"]["CLAUDE_QUEUE_REDIS_URL"].startswith("redis://redis:")
