"""Listen for control messages addressed to the run this worker owns.

A thread holds one pub/sub subscription on the run's control channel and calls
`on_cancel` for a valid cancel of *this* run, and `on_answer` with the request id of
an answer to one of its permission requests. Anything else (malformed, another run,
a pid we did not start) is logged and ignored: a message can only ever make us kill
the process tree we started for this run, or look up a decision the RunStore recorded
(the answer's content is not trusted: the recorded decision is what the CLI gets).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable

import redis
import structlog
from pydantic import ValidationError
from redis.client import PubSub

from shared.connection import await_subscription, channel_of
from shared.control import CONTROL_MESSAGE, CancelRequest, PermissionAnswer

log = structlog.get_logger(__name__)

_POLL_S = 1.0


class ControlSubscriber:
    """The pub/sub connection of a process's runs, one run at a time: a run that ended
    cleanly unsubscribes and leaves it here, so the next run's SUBSCRIBE is one command,
    not a new connection and its handshake (a work horse runs job after job)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._held: tuple[int, PubSub] | None = None

    def take(self) -> PubSub:
        held, self._held = self._held, None
        if held is not None and held[0] == os.getpid():  # never a forked parent's
            return held[1]
        return self._client.pubsub()

    def give_back(self, pubsub: PubSub) -> None:
        """Unsubscribe from everything and keep it; the next run's wait reads the
        confirmations. Everything: a reconnect subscribes again to what redis-py still
        lists, which can include an earlier run's channel."""
        try:
            pubsub.unsubscribe()  # type: ignore[no-untyped-call]
        except redis.RedisError:
            with contextlib.suppress(redis.RedisError):
                pubsub.close()
            return
        self._held = (os.getpid(), pubsub)


class ControlListener:
    """One run's control channel: `subscribe()` before the CLI is spawned, `start()` after,
    and before `started` is published, so a client that saw `started` is always heard."""

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        *,
        run_id: str,
        current_pid: Callable[[], int],
        on_cancel: Callable[[CancelRequest], None],
        on_answer: Callable[[str], None],
        subscriber: ControlSubscriber | None = None,
    ) -> None:
        self._client = client
        self._channel = channel
        self._run_id = run_id
        self._current_pid = current_pid
        self._on_cancel = on_cancel
        self._on_answer = on_answer
        self._stop_token = f"stop:{secrets.token_hex(16)}"
        self._subscriber = subscriber
        self._pubsub = client.pubsub() if subscriber is None else subscriber.take()
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)
        self._stopping = threading.Event()
        self._unsent: redis.RedisError | None = None
        self._token_read = False  # the loop ended on our own token: the pubsub is in step

    def subscribe(self) -> None:
        """Send SUBSCRIBE without waiting, so the round trip overlaps other work."""
        try:
            self._pubsub.subscribe(self._channel)
        except redis.RedisError as exc:
            self._unsent = exc  # start() reports it

    def start(self) -> None:
        """Wait until subscribed (from here on no control message is missed), then listen.

        If Redis is unreachable just now, the run goes on without the listener: the
        runner's periodic check of the persistent cancel flag still hears a cancel.
        """
        try:
            if self._unsent is not None:
                raise self._unsent  # no confirmation can come: do not wait for one
            await_subscription(self._pubsub, self._channel)
        except (redis.RedisError, RuntimeError) as exc:
            log.warning("control_listener_unavailable", error=str(exc))
            return
        self._thread.start()

    def stop(self) -> None:
        """Unblock and end the thread: a private token published to our own channel."""
        self._stopping.set()
        if self._thread.is_alive():
            # If Redis is unreachable the thread still notices _stopping within one poll.
            with contextlib.suppress(redis.RedisError):
                self._client.publish(self._channel, self._stop_token)
            self._thread.join(timeout=_POLL_S * 2)
        if self._subscriber is not None and self._token_read and not self._thread.is_alive():
            self._subscriber.give_back(self._pubsub)
            return
        with contextlib.suppress(redis.RedisError):
            self._pubsub.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._pubsub.get_message(timeout=_POLL_S)
            except redis.RedisError as exc:
                log.warning("control_listener_error", error=str(exc))
                if self._stopping.wait(_POLL_S):
                    return
                continue
            if message is None or message.get("type") != "message":
                continue
            if channel_of(message) != self._channel:
                continue  # a reused pubsub's earlier run's: not ours to act on
            raw = message["data"]
            if raw == self._stop_token.encode():
                self._token_read = True
                return
            self._handle(raw)

    def _handle(self, raw: bytes) -> None:
        try:
            request = CONTROL_MESSAGE.validate_json(raw)
        except ValidationError as exc:
            log.warning("control_message_ignored", reason="malformed", error=str(exc)[:500])
            return
        if request.run_id != self._run_id:
            log.warning("control_message_ignored", reason="other run", target=request.run_id)
            return
        if isinstance(request, PermissionAnswer):
            self._on_answer(request.request_id)
            return
        pid = self._current_pid()
        if request.pid is not None and request.pid != pid:
            log.warning("control_message_ignored", reason="pid not ours", pid=request.pid)
            return
        log.info("cancel_received", reason=request.reason)
        self._on_cancel(request)
