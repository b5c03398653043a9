"""A worker's own queue and its warm advertisements (warm sessions' routing).

Every claude-queue worker listens on a queue of its own first (`<queue>:worker:<name>`).
While it holds sessions' CLIs warm and is idle, it advertises them, and `submit` sends
those sessions' runs to its own queue. When it starts any job it withdraws the
advertisements and moves whatever waits on its own queue to the shared queue, so no
run waits behind a busy worker (the reaper does the same for dead or stuck workers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis
import structlog
from rq import Queue
from rq.job import Job

from shared.rqjobs import move_queued, worker_queue_name
from shared.scheduling import served_queue_names
from shared.settings import Settings
from worker.warm import WarmPool

if TYPE_CHECKING:
    from worker.context import WorkerContext

log = structlog.get_logger(__name__)


class OwnQueueMixin:
    """The own-queue and advertising part of a claude-queue RQ worker class."""

    name: str
    connection: redis.Redis
    queues: list[Queue]
    _ordered_queues: list[Queue]
    queue_class: type[Queue]
    job_class: Any
    serializer: Any
    death_penalty_class: Any
    _stop_requested: bool
    _own_queue: Queue | None = None

    @property
    def context(self) -> WorkerContext:
        raise NotImplementedError

    def _listen_on_own_queue(self, settings: Settings) -> None:
        """Put this worker's own queue first among the queues it listens on."""
        try:
            name = worker_queue_name(settings.queue_name, self.name)
        except ValueError:
            log.warning("no_own_queue", worker=self.name, detail="the name cannot name a queue")
            return
        own = next((q for q in self.queues if q.name == name), None)
        if own is None:
            own = self.queue_class(
                name=name,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
        self._own_queue = own
        self.queues = [own, *(q for q in self.queues if q is not own)]
        self._ordered_queues = self.queues[:]

    def reorder_queues(self, reference_queue: Queue) -> None:
        # Whatever the dequeue strategy does with the others, our own queue stays first.
        super().reorder_queues(reference_queue)  # type: ignore[misc]
        own = self._own_queue
        if own is not None and own in self._ordered_queues:
            self._ordered_queues = [own, *(q for q in self._ordered_queues if q is not own)]

    def _shared_queue(self, job: Job, queue: Queue) -> Queue:
        """The queue a job taken off our own queue or a priority list belongs to (its
        origin, the shared one): RQ records it there, as for any other job."""
        shared = self.context.settings.queue_name
        listed = queue.name in served_queue_names(shared) and queue.name != shared
        own = self._own_queue is not None and queue.name == self._own_queue.name
        if not (own or listed):
            return queue
        names = (job.origin, shared)
        return next((q for name in names for q in self.queues if q.name == name), queue)

    # What this process last advertised (session -> expiry), once Redis confirmed it;
    # None: not known (at start, or after a write that failed).
    _advertised: dict[str, float] | None = None

    def _withdraw_warm(self) -> None:
        """Withdraw every warm advertisement of ours: those we hold and those indexed."""
        ctx = self.context
        known, self._advertised = self._advertised or {}, None
        held = set(ctx.warm.sessions()) if ctx.warm is not None else set()
        ctx.store.withdraw_all_warm(self.name, sorted(held | set(known)))
        self._advertised = {}

    def _become_busy(self) -> None:
        """Withdraw our warm advertisements, then move what waits on our own queue to
        the shared one. Withdrawn first: a submit that read an advertisement and has not
        committed yet sees it change and looks again (RunStore.submit)."""
        shared = self.context.settings.queue_name
        try:
            self._withdraw_warm()
            if self._own_queue is not None:
                moved = move_queued(self.connection, self._own_queue.name, shared)
                if moved:
                    log.info("own_queue_moved", run_ids=moved, to=shared)
        except redis.RedisError as exc:
            # Jobs left on our queue are moved by the reaper; advertisements expire.
            log.warning("warm_withdraw_failed", error=str(exc))

    def _become_idle(self) -> None:
        """Advertise the sessions whose CLIs we now hold warm (none: our index goes)."""
        pool = self.context.warm
        if pool is None or self._own_queue is None or self._stop_requested:
            return
        sessions = pool.sessions()
        if sessions == self._advertised:
            return  # said already: the park advertised them, and nothing changed since
        self._advertised = None
        try:
            self.context.store.advertise_warm(self.name, sessions)
        except redis.RedisError as exc:
            log.warning("warm_advertise_failed", error=str(exc))
            return
        self._advertised = sessions


def warm_pool(settings: Settings, mode: str, *, on_park: Callable[[], None]) -> WarmPool | None:
    """Warm CLIs need a worker process that outlives its jobs: simple mode (worker/warm.py).

    `on_park` advertises at once: before the run's `finished` is published, so a next
    run submitted on seeing it finds the advertisement.
    """
    pool = WarmPool(idle_s=settings.warm_idle_s, max_size=settings.warm_max, on_park=on_park)
    return pool if mode == "simple" and pool.enabled else None


def queue_list(queues: object) -> list[Any]:
    """What an RQ worker was given as its queues, as a list (one name or Queue, or many)."""
    if isinstance(queues, str | Queue):
        return [queues]
    return list(queues) if isinstance(queues, Iterable) else []


def queue_names(queues: object) -> list[Any]:
    """Queues as names, so the worker rebuilds them with its own job class and serializer."""
    return [q.name if isinstance(q, Queue) else q for q in queue_list(queues)]
