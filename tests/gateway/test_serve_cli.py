"""`claude-queue serve`: an open gateway only on loopback, unless --insecure."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from shared.exitcodes import ExitCode
from shared.settings import Settings
from tests.conftest import REPO
from tests.gateway.conftest import GatewayFactory
from tests.gateway.server import API_KEY, gateway_env, serve_argv
from tests.gateway.support import bearer
from tests.redis_server import free_port

ANY_HOST = "0.0.0.0"  # noqa: S104 (what the gateway is asked to listen on)


def _serve(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `serve` to its end (for the cases where it refuses to start)."""
    return subprocess.run(
        serve_argv("--port", str(free_port()), *args),
        cwd=REPO,
        env={**gateway_env(settings), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("host", [ANY_HOST, "::", "192.0.2.10", "gateway.example"])
def test_serve_refuses_a_non_loopback_host_without_api_keys(settings: Settings, host: str) -> None:
    done = _serve(settings, "--host", host)
    assert done.returncode == ExitCode.USAGE
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: refusing to serve on {host} without API keys")
    assert "--insecure" in lines[0]


def test_serve_with_insecure_listens_beyond_loopback(start_gateway: GatewayFactory) -> None:
    server = start_gateway(["--host", ANY_HOST, "--insecure"], api_keys=())
    server.wait_for("gateway_insecure")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/status").status_code == 200  # open: no credentials needed


def test_serve_with_api_keys_listens_beyond_loopback(start_gateway: GatewayFactory) -> None:
    server = start_gateway(["--host", ANY_HOST])
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/status").status_code == 401
        assert http.get("/v1/status", headers=bearer(API_KEY)).status_code == 200
    assert server.count("gateway_insecure") == 0


def test_serve_refuses_invalid_settings(settings: Settings) -> None:
    done = _serve(settings, env={"CLAUDE_QUEUE_SSE_CLIENT_BUFFER": "0"})
    assert done.returncode == ExitCode.USAGE
    assert "CLAUDE_QUEUE_SSE_CLIENT_BUFFER" in done.stderr
