"""Shared fixtures: a real Redis on a dedicated db, settings, and real worker processes."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import hypothesis
import pytest
import redis
from pydantic import SecretStr

from producer.client import Client
from shared.settings import Settings
from tests.zygote import Zygote, shared_zygote

REPO = Path(__file__).resolve().parent.parent
FAKE_CLI = REPO / "tests" / "fakecli" / "claude"
TEST_PREFIX = "cqtest"


def _test_redis_url() -> str:
    """The test db; under `pytest -n N` (pytest-xdist) worker gwK uses the db K below it.

    Below, because a stock Redis has 16 dbs (0-15) and the default base is 13; db 0 (a
    developer's own data) is never used.
    """
    url = os.environ.get("CLAUDE_QUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    xdist_worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if not xdist_worker:
        return url
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) - int(xdist_worker.removeprefix("gw"))
    if db < 1:
        raise pytest.UsageError(f"{xdist_worker}: no test db below {url} (use a higher base)")
    return urlunsplit(parts._replace(path=f"/{db}"))


TEST_REDIS_URL = _test_redis_url()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never depend on the developer's CLAUDE_QUEUE_* variables."""
    for name in list(os.environ):
        if name.startswith("CLAUDE_QUEUE_") and name != "CLAUDE_QUEUE_TEST_REDIS_URL":
            monkeypatch.delenv(name)


def pytest_configure(config: pytest.Config) -> None:
    """The collector is paused while the test modules are imported (hypothesis,
    schemathesis, FastAPI, Playwright, ...): none of it is garbage, and its walks cost a
    fifth of each process's collection (6.6 -> 5.2 s of CPU for --collect-only).

    Hypothesis runs with no deadline: its default (200 ms per example) is a timing
    assertion, and a loaded host failed parser and env tests with 250-290 ms examples."""
    del config
    gc.disable()
    hypothesis.settings.register_profile("claude-queue", deadline=None)
    hypothesis.settings.load_profile("claude-queue")


def pytest_collection_finish(session: pytest.Session) -> None:
    del session
    gc.enable()


@pytest.fixture(scope="session", autouse=True)
def _freeze_startup_heap() -> None:
    """What the imports and collection built is never garbage: frozen (gc.freeze), so the
    collection after each test walks only what tests made since: ~45 ms -> ~0.2 ms each."""
    gc.collect()
    gc.freeze()


UNIT_TESTS = REPO / "tests" / "unit"


@pytest.fixture(autouse=True)
def _collect_garbage(request: pytest.FixtureRequest, _freeze_startup_heap: None) -> Iterator[None]:
    """Collect after each test with real resources, so a leak (an unclosed socket in a
    cycle) is blamed on its test: ~0.2 ms with the start-up heap frozen, ~45 ms without."""
    yield
    # Pure tests hold no sockets, and what they free outside a cycle warns at once anyway;
    # collecting after each of them still cost the unit tier ~10% (34.8 -> 38.9 s).
    if "redis_url" in request.fixturenames or not request.node.path.is_relative_to(UNIT_TESTS):
        gc.collect()


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        message = f"no Redis at {TEST_REDIS_URL} ({exc}); set CLAUDE_QUEUE_TEST_REDIS_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """The dedicated test db, flushed before and after each test (never FLUSHALL)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _revealed(field: object, dumped: object) -> object:
    """A setting as the worker must read it: secrets in clear (a JSON dump masks them)."""
    if isinstance(field, SecretStr):
        return field.get_secret_value()
    if isinstance(field, tuple) and field and all(isinstance(v, SecretStr) for v in field):
        return [v.get_secret_value() for v in field]
    return dumped


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that makes a worker process build exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_QUEUE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name, dumped in settings.model_dump(mode="json").items():
        value = _revealed(getattr(settings, name), dumped)
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        env[f"CLAUDE_QUEUE_{name.upper()}"] = text
    env.update(extra or {})
    return env


@pytest.fixture
def settings(redis_client: redis.Redis, redis_url: str) -> Settings:
    del redis_client  # requested for the per-test flush
    return Settings(
        redis_url=redis_url,
        key_prefix=TEST_PREFIX,
        queue_name=f"{TEST_PREFIX}-queue",
        claude_bin=str(FAKE_CLI),
        idle_timeout_s=60.0,
        result_grace_s=1.0,
        shutdown_grace_s=2.0,
        max_line_bytes=16 * 1024 * 1024,
        log_format="json",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings) as c:
        yield c


WorkerFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def zygote() -> Zygote:
    """This test process's fork server for `python -m producer` (see tests/zygote.py)."""
    return shared_zygote()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path, zygote: Zygote) -> Iterator[WorkerFactory]:
    """Start real `claude-queue worker` processes; all are stopped after the test.

    They are forked from the zygote, already past Python's start and imports, unless the
    test sets a PYTHON* variable, which only a fresh interpreter reads.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(
        name: str | None = None,
        *,
        mode: str = "fork",
        burst: bool = False,
        env: dict[str, str] | None = None,
        settings_override: Settings | None = None,
    ) -> subprocess.Popen[bytes]:
        worker_name = name or f"w{len(started)}"
        argv = [sys.executable, "-m", "producer", "worker", "--name", worker_name, "--mode", mode]
        if burst:
            argv.append("--burst")
        # Scratch folders of sessions without a cwd go under the test's own tmp dir.
        scratch = tmp_path / "worker-tmp"
        scratch.mkdir(exist_ok=True)
        full_env = worker_env(
            settings_override or settings, {"TMPDIR": str(scratch), **(env or {})}
        )
        with (tmp_path / f"{worker_name}.log").open("wb") as log_file:
            fd = log_file.fileno()
            proc = zygote.popen(argv[2:], env=full_env, stdout=fd, stderr=fd)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)  # second SIGTERM: cold stop
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
