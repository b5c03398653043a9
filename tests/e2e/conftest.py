"""Fixtures of the real-CLI tier: the pinned binary, the fake model API, isolated workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.fake_anthropic import FakeAnthropic, Turn
from shared.settings import Settings
from tests.conftest import REPO, WorkerFactory

CLAUDE_BIN = REPO / "devtools" / "claude-cli" / "node_modules" / ".bin" / "claude"
FAKE_API_KEY = "sk-test-fake"

# Anything in the developer's environment that could reach a real account, or change
# what the CLI does, is removed before a worker starts (workers copy os.environ).
_PRIVATE_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
_PRIVATE_NAMES = ("CLAUDE_CONFIG_DIR", "CLAUDECODE")

ApiFactory = Callable[[Sequence[Turn]], FakeAnthropic]


def _cli_problem(home: Path) -> str | None:
    """Why the pinned CLI cannot run here, or None."""
    if not CLAUDE_BIN.exists():
        return f"{CLAUDE_BIN} does not exist"
    try:
        done = subprocess.run(
            [str(CLAUDE_BIN), "--version"],
            capture_output=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        )
    except OSError as exc:
        return f"{CLAUDE_BIN} cannot be executed: {exc}"
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        return f"`{CLAUDE_BIN} --version` exited {done.returncode}: {output[:300]}"
    return None


@pytest.fixture(scope="session", autouse=True)
def claude_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned real CLI; skipped locally (failed in CI) when it is not installed."""
    problem = _cli_problem(tmp_path_factory.mktemp("cli-version-home"))
    if problem is not None:
        message = (
            f"the e2e tier needs the pinned Claude Code CLI: {problem}. "
            "Run `make install` (it installs it into devtools/claude-cli)."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CLAUDE_BIN


@pytest.fixture(autouse=True)
def _no_developer_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own API key, base URL or Claude settings never reach these tests."""
    for name in list(os.environ):
        if name.startswith(_PRIVATE_PREFIXES) or name in _PRIVATE_NAMES:
            monkeypatch.delenv(name)


@pytest.fixture
def fake_api() -> Iterator[ApiFactory]:
    """Start FakeAnthropic servers with a script; all are closed after the test."""
    started: list[FakeAnthropic] = []

    def start(script: Sequence[Turn]) -> FakeAnthropic:
        api = FakeAnthropic(script).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.close()


@dataclass
class Stack:
    """Builds worker settings that point the real CLI at a fake API, in a sandbox."""

    base: Settings
    start_worker: WorkerFactory
    root: Path
    tmpdir: Path

    def home(self, name: str = "home") -> Path:
        """An isolated HOME (the CLI's config and transcripts live under it)."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def workdir(self, name: str = "work") -> Path:
        """A job cwd (never the repository: tools write into it)."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def settings_for(
        self, api: FakeAnthropic, *, home: Path | None = None, api_key: bool = True
    ) -> Settings:
        extra_env = {
            "ANTHROPIC_BASE_URL": api.base_url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(home or self.home()),
            "TMPDIR": str(self.tmpdir),
        }
        if api_key:
            extra_env["ANTHROPIC_API_KEY"] = FAKE_API_KEY
        return self.base.model_copy(update={"claude_bin": str(CLAUDE_BIN), "extra_env": extra_env})

    def worker(
        self,
        api: FakeAnthropic,
        *,
        name: str | None = None,
        home: Path | None = None,
        api_key: bool = True,
        burst: bool = False,
    ) -> subprocess.Popen[bytes]:
        """A real `claude-queue worker` whose CLI talks to `api`."""
        settings = self.settings_for(api, home=home, api_key=api_key)
        return self.start_worker(name, burst=burst, settings_override=settings)


@pytest.fixture
def stack(settings: Settings, start_worker: WorkerFactory, tmp_path: Path) -> Iterator[Stack]:
    # A short TMPDIR: the CLI puts a unix socket there ($TMPDIR/cc-socks/<pid>.sock), and
    # socket paths are limited to 108 bytes, which deep pytest tmp paths can exceed.
    tmpdir = Path(tempfile.mkdtemp(prefix="cqe2e-"))
    try:
        yield Stack(base=settings, start_worker=start_worker, root=tmp_path, tmpdir=tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
