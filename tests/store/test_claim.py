"""worker.claim.claim_run on a real Redis: one run at a time per session, in submit order."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import redis

from producer.submission import prepare
from shared.events import Event, EventType, FinishedData, RunStatus
from shared.jobs import PromptJob
from shared.keys import keys_from
from shared.runstore import CancelOutcome, HeldRun, RunState, RunStore
from shared.settings import Settings
from tests.helpers import wait_until
from worker.claim import claim_run
from worker.context import WorkerContext
from worker.publisher import Publisher

SESSION = "claims"
WAIT_S = 15.0

Claim = tuple[Publisher, str] | None


def context(settings: Settings, client: redis.Redis, worker_name: str) -> WorkerContext:
    return WorkerContext(
        settings=settings,
        redis=client,
        keys=keys_from(settings),
        worker_name=worker_name,
        host="h",
    )


def submit(store: RunStore) -> str:
    run = prepare(store.settings, PromptJob(session_id=SESSION, prompt="p"))
    store.submit(run)
    return run.run_id


def finish(claimed: Claim) -> None:
    assert claimed is not None
    data = FinishedData(status=RunStatus.SUCCEEDED, duration_s=1.0)
    claimed[0].publish(Event(type=EventType.FINISHED, data=data), final_status=RunStatus.SUCCEEDED)


def claim_in_background(pool: ThreadPoolExecutor, ctx: WorkerContext, run_id: str) -> Future[Claim]:
    """Start claiming; returns once the worker waits for its turn (its marker is set)."""
    future = pool.submit(claim_run, ctx, SESSION, run_id)
    wait_until(lambda: HeldRun(SESSION, run_id, waiting=True) in ctx.store.held_runs())
    assert not future.done()
    return future


def test_the_run_heading_its_session_is_claimed_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    ctx = context(settings, redis_client, "w1")
    run_id = submit(ctx.store)
    claimed = claim_run(ctx, SESSION, run_id)
    assert claimed is not None
    assert ctx.store.run_record(SESSION, run_id).state is RunState.RUNNING
    assert ctx.store.running_runs() == {run_id: SESSION}
    assert claim_run(context(settings, redis_client, "w2"), SESSION, run_id) is None


def test_a_run_waits_for_the_one_ahead_to_finish(
    settings: Settings, redis_client: redis.Redis
) -> None:
    first_ctx, second_ctx = (context(settings, redis_client, w) for w in ("w1", "w2"))
    first, second = submit(first_ctx.store), submit(first_ctx.store)
    with ThreadPoolExecutor(1) as pool:
        waiting = claim_in_background(pool, second_ctx, second)
        finish(claim_run(first_ctx, SESSION, first))
        assert waiting.result(WAIT_S) is not None  # woken by the first run's `finished`
    assert second_ctx.store.run_record(SESSION, second).state is RunState.RUNNING


def test_a_run_ahead_whose_worker_died_is_declared_lost(
    settings: Settings, redis_client: redis.Redis
) -> None:
    first_ctx, second_ctx = (context(settings, redis_client, w) for w in ("w1", "w2"))
    first, second = submit(first_ctx.store), submit(first_ctx.store)
    assert claim_run(first_ctx, SESSION, first) is not None
    redis_client.delete(first_ctx.keys.lease(SESSION))  # its lease expired: w1 is gone
    assert claim_run(second_ctx, SESSION, second) is not None
    assert first_ctx.store.run_record(SESSION, first).final_status == "lost"
    closing = [
        (e.type, e.data.get("code") or e.data.get("status"))
        for e in first_ctx.store.replay(SESSION)
        if e.run_id == first
    ][-2:]
    assert closing == [(EventType.ERROR, "lost"), (EventType.FINISHED, "lost")]


def test_a_run_cancelled_while_it_waits_is_not_run(
    settings: Settings, redis_client: redis.Redis
) -> None:
    first_ctx, second_ctx = (context(settings, redis_client, w) for w in ("w1", "w2"))
    first, second = submit(first_ctx.store), submit(first_ctx.store)
    assert claim_run(first_ctx, SESSION, first) is not None
    with ThreadPoolExecutor(1) as pool:
        waiting = claim_in_background(pool, second_ctx, second)
        cancelled = second_ctx.store.cancel(SESSION, second, reason="no longer needed")
        assert cancelled is CancelOutcome.CANCELLED_QUEUED
        assert waiting.result(WAIT_S) is None
    assert second_ctx.store.held_runs() == [HeldRun(SESSION, first, waiting=False)]
