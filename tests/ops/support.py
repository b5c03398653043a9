"""Helpers of the ops tests: a worker started with extra options, and /metrics scraped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings
from tests.conftest import REPO, worker_env

WAIT_S = 60.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def worker_argv(name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "producer", "worker", "--name", name, *extra]


@contextmanager
def running_worker(
    settings: Settings, log_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`claude-queue worker` with `extra` options; stopped (SIGTERM, then kill) after."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            worker_argv("ops", *extra),
            cwd=REPO,
            env=worker_env(settings, {"TMPDIR": str(log_path.parent), **(env or {})}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # A pool's members share its process group (its own session): none outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(
    port: int,
    ready: Callable[[Samples], bool],
    proc: subprocess.Popen[bytes] | None = None,
    about: Callable[[], object] = lambda: "",
) -> Samples:
    """Scrape until `ready` holds (the worker may still be starting): a condition, not a
    time, is waited for; WAIT_S is only the safety net."""
    deadline = time.monotonic() + WAIT_S
    last: Samples = {}
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited with {proc.returncode}")
        try:
            last = scrape(port)
        except OSError:
            last = {}
        if last and ready(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"never got there ({about()}); last scrape: {sorted(last.items())[:80]}")
