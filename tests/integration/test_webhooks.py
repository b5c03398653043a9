"""Webhooks of finished runs, end to end: real workers, real Redis, a real HTTP receiver.

The receiver is a ThreadingHTTPServer on 127.0.0.1 in the test process; it counts
every connection it accepts (not only requests), so "no connection was made" is
observable. Workers that may reach it run with webhook_allow_private.

Retries wait in RQ's scheduled registry; `promote_due` puts them back on the queue.
Workers call it each maintenance round once wired (worker/maintenance.py); here the
test calls it too while it waits, so these tests do not depend on that wiring.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer.client import Client
from producer.errors import InvalidJobError
from shared.jobs import WEBHOOK_FUNCTION
from shared.settings import Settings
from shared.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookDelivery, verify
from tests.conftest import WorkerFactory
from worker.webhook_delivery import TargetUnreachable, check_target, post
from worker.webhooks import delivery_job_id, enqueue_for_run, promote_due

SECRET = "webhook-test-secret"
WAIT_S = 90.0
ENDED = (JobStatus.FINISHED, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with scripted statuses (then 200)."""

    def __init__(self, statuses: tuple[int, ...] = (), *, listening: bool = True) -> None:
        self.requests: list[Received] = []
        self.connections = 0
        self.statuses = deque(statuses)
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.record(Received(self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                with receiver._changed:
                    receiver.connections += 1
                    receiver._changed.notify_all()
                return True

        # Bound at once, listening only from start(): until then a connection is refused.
        self.server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.server_bind()
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None
        if listening:
            self.start()

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> None:
        self.server.server_activate()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def record(self, received: Received) -> int:
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
            return self.statuses.popleft() if self.statuses else 200

    def wait_for(self, count: int, *, while_waiting: Callable[[], object] = lambda: None) -> None:
        """Block until `count` requests came in, calling `while_waiting` between looks."""
        deadline = time.monotonic() + WAIT_S
        while True:
            with self._changed:
                if self._changed.wait_for(lambda: len(self.requests) >= count, timeout=0.2):
                    return
                seen = len(self.requests)
            assert time.monotonic() < deadline, f"{seen} of {count} requests came"
            while_waiting()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    """A producer that may name loopback receivers (the tests' receiver is one); each
    worker below decides for itself whether it may deliver there."""
    with Client(settings.model_copy(update={"webhook_allow_private": True})) as producer:
        yield producer


def _worker_settings(settings: Settings, **update: Any) -> Settings:
    # A short maintenance round and short retry waits.
    return settings.model_copy(
        update={"reaper_interval_s": 0.5, "webhook_retry_s": (1, 1, 1, 1, 1, 1), **update}
    )


def test_a_loopback_webhook_is_refused_at_submit_by_default(settings: Settings) -> None:
    with Client(settings) as producer, pytest.raises(InvalidJobError, match="loopback"):
        producer.submit(session_id="s", prompt="p", webhook="http://127.0.0.1:9/hook")


def _start(start_worker: WorkerFactory, settings: Settings, name: str = "w0", **kw: Any) -> Any:
    return start_worker(
        name,
        settings_override=_worker_settings(settings, **kw),
        env={"CLAUDE_QUEUE_WEBHOOK_SECRET": SECRET},
    )


def _job(client: redis.Redis, run_id: str) -> Job:
    return Job.fetch(delivery_job_id(run_id), connection=client, serializer=JSONSerializer)


def _await_job(client: redis.Redis, settings: Settings, run_id: str, *status: JobStatus) -> Job:
    """Poll the delivery job until it is in one of `status` (a bounded wait)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        # get_status() reads the status again, after the fetch: fetched once more so
        # the fields read next are not from before the status changed.
        exists = client.exists(f"rq:job:{delivery_job_id(run_id)}")
        if exists and _job(client, run_id).get_status() in status:
            return _job(client, run_id)
        assert time.monotonic() < deadline, f"delivery of {run_id} never reached {status}"
        promote_due(client, settings)
        time.sleep(0.05)


def _promoter(client: redis.Redis, settings: Settings) -> Callable[[], object]:
    return lambda: promote_due(client, settings)


@pytest.mark.parametrize("mode", ["fork", "simple"])
def test_a_run_with_a_webhook_gets_one_signed_post(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    receiver: Receiver,
    redis_client: redis.Redis,
    mode: str,
) -> None:
    start_worker(
        "w0",
        mode=mode,
        settings_override=_worker_settings(settings, webhook_allow_private=True),
        env={"CLAUDE_QUEUE_WEBHOOK_SECRET": SECRET},
    )
    # A name, not an address: resolved by the worker, connected to as checked.
    url = receiver.url(host="localhost", path="/hook?token=abc")
    handle = client.submit(session_id="hooked", prompt="hello", webhook=url)
    result = handle.result(timeout_s=WAIT_S)
    assert result.succeeded

    receiver.wait_for(1)
    _await_job(redis_client, settings, handle.run_id, JobStatus.FINISHED)
    (posted,) = receiver.requests  # exactly one, even after the job is done
    assert posted.path == "/hook?token=abc"
    assert posted.headers["Host"] == f"localhost:{receiver.port}"
    assert posted.headers["Content-Type"] == "application/json"
    assert posted.headers["User-Agent"].startswith("claude-queue/")
    assert posted.headers[DELIVERY_HEADER] == handle.run_id
    assert verify(SECRET, posted.body, posted.headers[SIGNATURE_HEADER])
    assert not verify("another secret", posted.body, posted.headers[SIGNATURE_HEADER])

    body = json.loads(posted.body)
    finished = client.history("hooked")[-1]
    assert body["delivery_id"] == handle.run_id
    assert body["event"] == "run.finished"
    assert (body["session_id"], body["run_id"]) == ("hooked", handle.run_id)
    assert body["status"] == "succeeded"
    assert body["result"] == result.text
    assert body["result"]
    assert body["total_cost_usd"] == result.total_cost_usd is not None
    assert body["usage"] == result.usage
    assert body["usage"]
    assert body["finished"] == finished.model_dump(mode="json")


def test_a_run_without_a_webhook_enqueues_nothing(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    _start(start_worker, settings, webhook_allow_private=True)
    handle = client.submit(session_id="plain", prompt="hello")
    assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
    follow_up = client.submit(session_id="plain-2", prompt="hello")
    assert follow_up.wait(timeout_s=WAIT_S).status == "succeeded"
    assert not redis_client.exists(f"rq:job:{delivery_job_id(handle.run_id)}")


def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_up(
    client: Client,
    settings: Settings,
    start_worker: WorkerFactory,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    down = Receiver(listening=False)
    try:
        _start(start_worker, settings, webhook_allow_private=True)
        handle = client.submit(session_id="down", prompt="hello", webhook=down.url())
        assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
        # The first attempt was refused a connection: RQ scheduled a retry.
        _await_job(redis_client, settings, handle.run_id, JobStatus.SCHEDULED)
        (failed,) = _logged(tmp_path / "w0.log", "webhook_failed")
        assert "could not connect" in failed["error"]
        assert (failed["delivery_id"], failed["attempt"]) == (handle.run_id, 1)
        assert down.connections == 0
        down.start()
        down.wait_for(1, while_waiting=_promoter(redis_client, settings))
        _await_job(redis_client, settings, handle.run_id, JobStatus.FINISHED)
        assert len(down.requests) == 1
        (delivered,) = _logged(tmp_path / "w0.log", "webhook_delivered")
        assert delivered["attempt"] == 2
        assert down.requests[0].headers[DELIVERY_HEADER] == handle.run_id
    finally:
        down.close()


def _logged(worker_log: Path, event: str) -> list[dict[str, Any]]:
    """The worker's JSON log lines of one event."""
    lines = [json.loads(line) for line in worker_log.read_text().splitlines() if line[:1] == "{"]
    return [line for line in lines if line.get("event") == event]


def _failure(job: Job) -> str:
    """What the delivery job's latest attempt failed with."""
    result = job.latest_result()
    assert result is not None
    assert result.exc_string is not None
    return str(result.exc_string)


def test_a_500_is_retried_with_the_same_delivery(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    flaky = Receiver((500,))
    try:
        _start(start_worker, settings, webhook_allow_private=True)
        handle = client.submit(session_id="flaky", prompt="hello", webhook=flaky.url())
        assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
        flaky.wait_for(2, while_waiting=_promoter(redis_client, settings))
        job = _await_job(redis_client, settings, handle.run_id, JobStatus.FINISHED)
        # At least once: a loaded machine may time out the attempt that got its 200 and
        # send it once more. Every attempt is the same delivery.
        first, *retries = flaky.requests
        assert retries
        for retry in retries:
            assert retry.body == first.body
            assert retry.headers[SIGNATURE_HEADER] == first.headers[SIGNATURE_HEADER]
            assert retry.headers[DELIVERY_HEADER] == first.headers[DELIVERY_HEADER]
        assert first.headers[DELIVERY_HEADER] == handle.run_id
        assert job.return_value() == "delivered: HTTP 200"
    finally:
        flaky.close()


def test_a_404_fails_the_delivery_without_a_retry(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    gone = Receiver((404, 200))
    try:
        _start(start_worker, settings, webhook_allow_private=True)
        handle = client.submit(session_id="gone", prompt="hello", webhook=gone.url())
        assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
        job = _await_job(redis_client, settings, handle.run_id, *ENDED)
        assert job.get_status() == JobStatus.FAILED
        assert "answered HTTP 404" in _failure(job)
        assert len(gone.requests) == 1
    finally:
        gone.close()


def test_a_private_target_is_refused_without_a_connection(
    settings: Settings,
    start_worker: WorkerFactory,
    receiver: Receiver,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # The producer allows private targets; the worker does not, and has the last word.
    with Client(settings.model_copy(update={"webhook_allow_private": True})) as producer:
        _start(start_worker, settings)
        handle = producer.submit(session_id="private", prompt="hello", webhook=receiver.url())
        assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
        job = _await_job(redis_client, settings, handle.run_id, *ENDED)
    assert job.get_status() == JobStatus.FAILED
    reason = _failure(job)
    assert "127.0.0.1 is a loopback address" in reason
    assert job.retries_left == 0  # refused for good, not retried
    assert receiver.connections == 0
    assert receiver.requests == []
    (refusal,) = _logged(tmp_path / "w0.log", "webhook_refused")
    assert refusal["delivery_id"] == handle.run_id


def test_a_delivery_survives_its_worker_being_killed_between_attempts(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    flaky = Receiver((500,))
    try:
        first = _start(start_worker, settings, "w0", webhook_allow_private=True)
        handle = client.submit(session_id="killed", prompt="hello", webhook=flaky.url())
        assert handle.wait(timeout_s=WAIT_S).status == "succeeded"
        flaky.wait_for(1)
        # Stopped at once, so it cannot take the retry itself when it falls due (1 s
        # later), and be killed in the middle of it; its work horse ends the attempt.
        first.send_signal(signal.SIGSTOP)
        _await_job(redis_client, settings, handle.run_id, JobStatus.SCHEDULED, JobStatus.QUEUED)
        first.kill()
        first.wait(timeout=30)

        _start(start_worker, settings, "w1", webhook_allow_private=True)
        flaky.wait_for(2, while_waiting=_promoter(redis_client, settings))
        job = _await_job(redis_client, settings, handle.run_id, JobStatus.FINISHED)
        assert job.worker_name == "w1"
        assert len(flaky.requests) == 2
    finally:
        flaky.close()


def test_a_hand_made_delivery_with_a_bad_payload_fails_without_a_retry(
    client: Client, settings: Settings, start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    # Anyone who can write RQ's keys can enqueue the delivery function with anything.
    bad = {"session_id": "s", "run_id": "r" * 32, "url": "http://x/", "headers": {"a": "b"}}
    job = client.queue.enqueue_call(
        WEBHOOK_FUNCTION, args=(bad,), job_id="webhook-bad", retry=Retry(max=3, interval=[1])
    )
    _start(start_worker, settings, webhook_allow_private=True)
    # Behind it in the queue: once this run has finished, the delivery was judged.
    follow_up = client.submit(session_id="after-bad", prompt="hello")
    assert follow_up.wait(timeout_s=WAIT_S).status == "succeeded"

    assert job.get_status() == JobStatus.FAILED
    reason = _failure(job)
    assert "invalid delivery payload" in reason
    assert "run_id" in reason
    assert "headers" in reason


def test_enqueue_for_run_reads_the_webhook_from_the_runs_job(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    # For runs another process ends (the reaper, a worker whose horse died): no worker here.
    url = "https://hooks.example.com/x"
    hooked = client.submit(session_id="reaped", prompt="hello", webhook=url)
    plain = client.submit(session_id="plain", prompt="hello")

    assert enqueue_for_run(redis_client, settings, hooked.run_id)
    assert not enqueue_for_run(redis_client, settings, hooked.run_id)  # once per run
    assert not enqueue_for_run(redis_client, settings, plain.run_id)
    assert not enqueue_for_run(redis_client, settings, "f" * 32)
    job = _job(redis_client, hooked.run_id)
    assert WebhookDelivery.model_validate(job.args[0]) == WebhookDelivery(
        session_id="reaped", run_id=hooked.run_id, url=url
    )
    assert job.func_name == WEBHOOK_FUNCTION
    assert job.retries_left is not None and job.retries_left > 0


def test_promote_due_moves_only_due_deliveries(
    client: Client, settings: Settings, redis_client: redis.Redis
) -> None:
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(seconds=5)
    other = client.queue.enqueue_at(past, "os.getpid", job_id="not-a-delivery")
    due = client.queue.enqueue_at(past, "worker.webhooks.deliver", {}, job_id="webhook-due")
    later = datetime.now(UTC) + timedelta(hours=1)
    client.queue.enqueue_at(later, "worker.webhooks.deliver", {}, job_id="webhook-later")

    assert promote_due(redis_client, settings) == 1
    assert promote_due(redis_client, settings) == 0
    assert client.queue.get_job_ids() == [due.id]
    assert due.get_status() == JobStatus.QUEUED
    scheduled = client.queue.scheduled_job_registry.get_job_ids()
    assert sorted(scheduled) == sorted([other.id, "webhook-later"])


# -- https: the checked address is connected to, the name is verified ----------------


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a cert")
def test_https_connects_to_the_checked_address_and_verifies_the_name(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "localhost")
    other_cert, _ = _certificate(tmp_path, "elsewhere.example")
    server = Receiver(listening=False)
    names: list[str | None] = []

    def record_name(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = record_name
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.start()
    try:
        url = f"https://localhost:{server.port}/tls"
        target = check_target(url, allow_private=True, resolver=lambda host, port: ["127.0.0.1"])
        trusted = ssl.create_default_context(cafile=str(cert))
        posted = post(
            target, b"{}", {"Content-Type": "application/json"}, timeout_s=10, verify=trusted
        )
        assert (posted.status, posted.address) == (200, "127.0.0.1")
        assert names == ["localhost"]
        assert server.requests[0].headers["Host"] == f"localhost:{server.port}"

        # A certificate for another name fails, though the address is the same.
        wrong = ssl.create_default_context(cafile=str(other_cert))
        with pytest.raises(TargetUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            post(target, b"{}", {}, timeout_s=10, verify=wrong)
        assert len(server.requests) == 1
    finally:
        server.close()
