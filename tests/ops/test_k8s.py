"""deploy/k8s: the manifests parse, and hold what the issue asks of them. (No Kubernetes
schema validation here: that needs a validator package, see the ops report.)"""

from __future__ import annotations

from typing import Any, cast

import click
import pytest
import yaml

from producer.cli_admin import worker
from producer.cli_doctor import doctor
from producer.cli_serve import serve
from shared.settings import Settings
from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"


def _documents() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def _parses(command: click.Command, args: list[str]) -> None:
    """The container's args are options this code's command accepts."""
    assert args[0] == "claude-queue"
    command.make_context(args[1], args[2:])


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return cast(dict[str, Any], container)


def test_worker_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _documents()[("Deployment", "claude-queue-worker")]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    env = {item["name"]: item.get("value") for item in container["env"]}
    grace_s = float(env["CLAUDE_QUEUE_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > grace_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == {"/srv/work"}
    assert env["HOME"].startswith("/srv/work/") and env["TMPDIR"].startswith("/srv/work/")
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe == ["claude-queue", "doctor", "--offline"]
    _parses(doctor, probe)
    _parses(worker, container["args"])
    assert container["resources"]["requests"]["memory"]
    # The settings the manifest sets are real settings with valid values.
    for name, text in env.items():
        if name.startswith("CLAUDE_QUEUE_") and text is not None:
            monkeypatch.setenv(name, text)
    assert Settings.from_environment().cwd_roots == ("/srv/work",)


def test_keda_scales_the_worker_on_the_rq_queue() -> None:
    documents = _documents()
    scaled = documents[("ScaledObject", "claude-queue-worker")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "claude-queue-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"rq:queue:{Settings().queue_name}"
    auth = trigger["authenticationRef"]["name"]
    assert ("TriggerAuthentication", auth) in documents


def test_gateway_deployment_and_service() -> None:
    documents = _documents()
    deployment = documents[("Deployment", "claude-queue-gateway")]
    container = _container(deployment)
    _parses(serve, container["args"])
    service = documents[("Service", "claude-queue-gateway")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_manifest_is_in_a_known_kind() -> None:
    kinds = {kind for kind, _ in _documents()}
    assert kinds == {"Deployment", "Service", "ScaledObject", "TriggerAuthentication"}
