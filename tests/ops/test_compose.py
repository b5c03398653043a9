"""compose.yaml (no Docker here): it holds what issue 16 asks of it (a worker healthcheck,
init, a workspace volume the worker's cwd roots allow, the gateway, Prometheus under a
profile), every `claude-queue` command in it is one our CLI accepts, and the Prometheus
config parses and scrapes the ports the services serve /metrics on."""

from __future__ import annotations

import os
from typing import Any, cast

import pytest
import yaml

from shared.settings import Settings
from tests.conftest import REPO
from tests.zygote import shared_zygote
from worker.workdir import is_within

COMPOSE = REPO / "compose.yaml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
K8S_WORKER = REPO / "deploy" / "k8s" / "worker.yaml"
WORKSPACE = "/srv/work"
WORKER_METRICS_PORT = 9464  # deploy/k8s/worker.yaml's too


def _compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text()))


def _service(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], _compose()["services"][name])


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _commands() -> list[list[str]]:
    """Every `claude-queue ...` argv in compose.yaml: commands and healthchecks."""
    found = []
    for service in _compose()["services"].values():
        candidates = [service.get("command"), service.get("healthcheck", {}).get("test")]
        for candidate in candidates:
            argv = candidate[1:] if candidate and candidate[0] == "CMD" else candidate
            if isinstance(argv, list) and argv and argv[0] == "claude-queue":
                found.append([str(arg) for arg in argv])
    return found


def test_compose_runs_a_known_set_of_claude_queue_commands() -> None:
    assert sorted(argv[1] for argv in _commands()) == ["doctor", "serve", "worker"]


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv[1:]))
def test_every_claude_queue_command_is_one_the_cli_accepts(argv: list[str]) -> None:
    # Options are parsed before --help is acted on: an unknown one fails here.
    done = shared_zygote().run(["producer", *argv[1:], "--help"], env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout


def test_worker_health_init_and_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _service("worker")
    assert worker["init"] is True
    probe = worker["healthcheck"]["test"]
    # The same check as the Kubernetes readiness probe.
    k8s = next(d for d in yaml.safe_load_all(K8S_WORKER.read_text()) if d["kind"] == "Deployment")
    (container,) = k8s["spec"]["template"]["spec"]["containers"]
    assert probe == ["CMD", *container["readinessProbe"]["exec"]["command"]]
    mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in worker["volumes"]}
    assert mounts[WORKSPACE] in _compose()["volumes"]  # a named volume, kept across restarts
    # The worker's settings, as compose sets them, are valid and allow /srv/work/...
    for name, value in worker["environment"].items():
        if name.startswith("CLAUDE_QUEUE_") and value is not None:
            monkeypatch.setenv(name, str(value))
    roots = Settings.from_environment().cwd_roots
    assert any(is_within(f"{WORKSPACE}/project", root) for root in roots)
    assert not any(is_within("/home/runner", root) for root in roots)


def test_gateway_listens_for_the_host_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = _service("gateway")
    argv = gateway["command"]
    assert argv[:2] == ["claude-queue", "serve"] and _option(argv, "--host") == "0.0.0.0"  # noqa: S104
    port = _option(argv, "--port")
    assert gateway["ports"] == [f"127.0.0.1:{port}:{port}"]
    # API keys come from the shell (a bare key: passed on if set, else left unset).
    assert "CLAUDE_QUEUE_API_KEYS" in gateway["environment"]
    assert gateway["environment"]["CLAUDE_QUEUE_API_KEYS"] is None
    assert "--insecure" not in argv
    for name, value in gateway["environment"].items():
        if name.startswith("CLAUDE_QUEUE_") and value is not None:
            monkeypatch.setenv(name, str(value))
    Settings.from_environment()


def test_every_published_port_is_on_loopback() -> None:
    for service in _compose()["services"].values():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), mapping


def test_prometheus_is_optional_and_scrapes_the_workers_and_the_gateway() -> None:
    compose = _compose()
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    assert all("profiles" not in s for n, s in compose["services"].items() if n != "prometheus")
    # Every file it mounts is in the repository.
    for mount in prometheus["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).is_file(), source
    assert (
        f"./deploy/prometheus/prometheus.yml:{_config_path(prometheus)}:ro"
        in (prometheus["volumes"])
    )

    config = yaml.safe_load(PROMETHEUS.read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"claude-queue-worker", "claude-queue-gateway"}

    (dns,) = jobs["claude-queue-worker"]["dns_sd_configs"]
    assert dns["names"] == ["worker"] and dns["type"] == "A"  # every replica
    assert dns["port"] == WORKER_METRICS_PORT

    gateway_argv = compose["services"]["gateway"]["command"]
    gateway = jobs["claude-queue-gateway"]
    assert gateway["static_configs"] == [
        {"targets": [f"gateway:{_option(gateway_argv, '--port')}"]}
    ]
    # The gateway's /metrics wants an API key: the secret compose mounts.
    (secret,) = prometheus["secrets"]
    assert gateway["authorization"]["credentials_file"] == f"/run/secrets/{secret}"
    assert compose["secrets"][secret] == {"environment": "CLAUDE_QUEUE_METRICS_API_KEY"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"


def test_the_worker_serves_metrics_where_prometheus_scrapes() -> None:
    argv = _service("worker")["command"]
    assert int(_option(argv, "--metrics-port")) == WORKER_METRICS_PORT


def _config_path(prometheus: dict[str, Any]) -> str:
    flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    return str(flag.split("=", 1)[1])


def test_the_image_makes_the_workspace_for_its_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--uid 1000 runner" in dockerfile
    assert f"mkdir -p {WORKSPACE}" in dockerfile
    assert f"chown runner:runner {WORKSPACE}" in dockerfile
