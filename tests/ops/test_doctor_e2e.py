"""`doctor`'s cli-auth check with the real pinned CLI against the fake model API: a 401
fails it, an answer passes it. Skipped loudly (failed in CI) without the pinned CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.fake_anthropic import FakeAnthropic, TextTurn, error_turn
from shared.settings import Settings
from tests.ops.test_doctor import checks, run_doctor

pytestmark = pytest.mark.e2e

CLAUDE_BIN = Path(__file__).resolve().parents[2] / "devtools/claude-cli/node_modules/.bin/claude"
FAKE_API_KEY = "sk-test-fake"


@pytest.fixture(autouse=True)
def _pinned_cli() -> None:
    if not CLAUDE_BIN.exists():
        message = f"the pinned Claude CLI is not installed at {CLAUDE_BIN}: run `make install`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _settings(settings: Settings, api: FakeAnthropic, home: Path) -> Settings:
    home.mkdir(exist_ok=True)
    extra_env = {
        "ANTHROPIC_BASE_URL": api.base_url,
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "HOME": str(home),
    }
    return settings.model_copy(update={"claude_bin": str(CLAUDE_BIN), "extra_env": extra_env})


def test_an_unauthenticated_cli_fails_cli_auth(settings: Settings, tmp_path: Path) -> None:
    with FakeAnthropic([error_turn(401, times=100)]) as api:
        code, report = run_doctor(_settings(settings, api, tmp_path / "home"))
    found = checks(report)
    assert found["cli"]["status"] == "ok"  # the pinned version
    assert found["cli-auth"]["status"] == "fail", found["cli-auth"]
    assert "login" in found["cli-auth"]["fix"] or "ANTHROPIC_API_KEY" in found["cli-auth"]["fix"]
    assert code == 1


def test_an_answering_cli_passes_cli_auth(settings: Settings, tmp_path: Path) -> None:
    with FakeAnthropic([TextTurn("ok")]) as api:
        _code, report = run_doctor(_settings(settings, api, tmp_path / "home"))
        assert api.requests, "the check sent no prompt"
    assert checks(report)["cli-auth"]["status"] == "ok", checks(report)["cli-auth"]
