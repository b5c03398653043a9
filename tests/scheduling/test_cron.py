"""Crons: stored in Redis, fired once per tick however many workers tick, each firing a
normal run (template or fixed session), overlapping firings following on_busy."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from producer.cli_cron import cron
from producer.client import Client, RunHandle
from producer.cron import CronFiring, add_cron, list_crons, remove_cron, run_cron, tick_crons
from producer.errors import InvalidJobError
from shared.cron import CronError, check_schedule, check_template, latest_tick, render_session
from shared.events import RunStatus
from shared.runstore import RunState, RunStore
from shared.settings import Settings
from tests.conftest import WorkerFactory, worker_env
from tests.integration.test_acl import RoleClient, role_client, role_url  # noqa: F401

EVERY_SECOND = "* * * * * *"
# 2030-01-07 09:00:00 UTC, a Monday.
MONDAY_9 = 1894006800.0


def test_schedules_and_templates_are_checked() -> None:
    assert check_schedule("0  9 * * 1-5") == "0 9 * * 1-5"
    for bad in ("", "0 9 * *", "61 * * * *", "* * * * * * * *", "tomorrow"):
        with pytest.raises(CronError):
            check_schedule(bad)
    assert check_template("triage-{date}") == "triage-{date}"
    for bad in ("x-{nope}", "x-{date!r}", "x-{date:>9}", "x-{date.year}", "x-{", "x-{0}"):
        with pytest.raises(CronError):
            check_template(bad)
    assert render_session("triage-{date}", name="t", tick=MONDAY_9) == "triage-2030-01-07"
    assert render_session("{name}.{time}", name="t", tick=MONDAY_9) == "t.090000"
    with pytest.raises(CronError):
        render_session("a/{name}", name="t", tick=MONDAY_9)  # not a session id


def test_latest_tick_is_the_tick_at_or_before_now() -> None:
    assert latest_tick("0 9 * * 1-5", MONDAY_9) == MONDAY_9
    assert latest_tick("0 9 * * 1-5", MONDAY_9 + 3600) == MONDAY_9
    # Sunday evening: Friday 09:00.
    assert latest_tick("0 9 * * 1-5", MONDAY_9 - 3600) == MONDAY_9 - 3 * 86400
    assert latest_tick(EVERY_SECOND, MONDAY_9 + 0.5) == MONDAY_9


def test_bad_crons_are_refused_with_the_reason(client: Client) -> None:
    with pytest.raises(InvalidJobError, match="schedule"):
        add_cron(client, "c", schedule="nope", session_id="s", prompt="hi")
    with pytest.raises(InvalidJobError, match="one of them"):
        add_cron(client, "c", schedule=EVERY_SECOND, prompt="hi")
    with pytest.raises(InvalidJobError, match="prompt"):
        add_cron(client, "c", schedule=EVERY_SECOND, session_id="s", prompt="")
    with pytest.raises(InvalidJobError, match="profile"):
        add_cron(client, "c", schedule=EVERY_SECOND, session_id="s", prompt="hi", profile="nope")
    with pytest.raises(InvalidJobError, match="name"):
        add_cron(client, "a b", schedule=EVERY_SECOND, session_id="s", prompt="hi")
    add_cron(client, "c", schedule=EVERY_SECOND, session_id="s", prompt="hi")
    with pytest.raises(InvalidJobError, match="exists"):
        add_cron(client, "c", schedule=EVERY_SECOND, session_id="s", prompt="again")
    add_cron(client, "c", schedule=EVERY_SECOND, session_id="s", prompt="again", replace=True)
    assert [i.spec.job["prompt"] for i in list_crons(client)] == ["again"]


def _tick_from_threads(settings: Settings, now: float, count: int) -> list[CronFiring]:
    """`count` tickers, each with its own connection, stepping at the same instant."""
    fired: list[CronFiring] = []
    barrier = threading.Barrier(count)

    def step() -> None:
        with Client(settings) as own:
            store = RunStore(own.redis, settings)
            barrier.wait()
            fired.extend(tick_crons(store, now))

    threads = [threading.Thread(target=step) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return fired


def test_three_tickers_at_one_instant_fire_each_tick_once(
    client: Client, settings: Settings
) -> None:
    spec = add_cron(client, "race", schedule=EVERY_SECOND, session_id="race", prompt="hi")
    start = float(int(spec.created_at)) + 1  # the first tick after the cron was added
    fired = [_tick_from_threads(settings, start + 0.2, 3)]
    fired.append(_tick_from_threads(settings, start + 0.7, 3))  # the same tick again
    fired.append(_tick_from_threads(settings, start + 1.1, 3))  # the next one
    fired.append(_tick_from_threads(settings, start + 0.9, 3))  # a clock behind: no re-fire
    assert [[f.tick for f in step] for step in fired] == [[start], [], [start + 1], []]
    runs = client.store.pending_runs("race")
    assert runs == [f.run_id for step in fired for f in step]
    history = [e for e in client.history("race") if e.type == "queued"]
    assert [e.data["metadata"] for e in history] == [
        {"cron": "race", "cron_tick": int(start)},
        {"cron": "race", "cron_tick": int(start) + 1},
    ]


def test_a_removed_cron_never_fires(client: Client) -> None:
    spec = add_cron(client, "gone", schedule=EVERY_SECOND, session_id="gone", prompt="hi")
    assert remove_cron(client, "gone") is True
    assert remove_cron(client, "gone") is False
    assert tick_crons(client.store, spec.created_at + 5) == []
    with pytest.raises(InvalidJobError, match="no cron"):
        run_cron(client, "gone")


def test_a_cron_fires_once_per_tick_with_three_workers_ticking(
    client: Client, settings: Settings, start_worker: WorkerFactory
) -> None:
    # Stored before any worker runs: the workers find it in Redis.
    add_cron(client, "every", schedule=EVERY_SECOND, session_id="every", prompt="tick")
    for i in range(3):
        start_worker(f"w{i}")
    finished = 0
    for envelope in client.stream("every", timeout_s=90):
        if envelope.type == "finished":
            assert envelope.data["status"] == "succeeded"
            finished += 1
            if finished == 4:
                break
    remove_cron(client, "every")
    ticks = [e.data["metadata"]["cron_tick"] for e in client.history("every") if e.type == "queued"]
    assert len(ticks) >= 4
    assert len(set(ticks)) == len(ticks), f"a tick fired twice: {ticks}"


def test_each_firing_from_a_template_gets_its_own_session(
    client: Client, start_worker: WorkerFactory
) -> None:
    add_cron(
        client, "nightly", schedule="0 3 * * *", session_template="n-{name}-{tick}", prompt="x"
    )
    firing = run_cron(client, "nightly")
    assert firing.run_id is not None
    assert firing.session_id == f"n-nightly-{int(firing.tick)}"
    start_worker("w0")
    handle = RunHandle(client, firing.session_id, firing.run_id, 1)
    assert handle.wait(timeout_s=60).status is RunStatus.SUCCEEDED


def test_on_busy_reject_skips_a_firing_while_the_last_one_is_pending(client: Client) -> None:
    add_cron(client, "r", schedule="0 3 * * *", session_id="r", prompt="x", on_busy="reject")
    first = run_cron(client, "r")
    second = run_cron(client, "r")
    assert first.run_id is not None
    assert second.run_id is None and second.skipped == "previous firing still busy"
    assert client.store.pending_runs("r") == [first.run_id]


def test_on_busy_interrupt_cancels_the_last_firing(client: Client) -> None:
    add_cron(client, "i", schedule="0 3 * * *", session_id="i", prompt="x", on_busy="interrupt")
    first = run_cron(client, "i")
    second = run_cron(client, "i")
    assert first.run_id is not None and second.run_id is not None
    assert client.store.run_record("i", first.run_id).state is RunState.FINISHED
    assert client.store.pending_runs("i") == [second.run_id]


def test_on_busy_enqueue_queues_behind_the_last_firing(client: Client) -> None:
    add_cron(client, "e", schedule="0 3 * * *", session_id="e", prompt="x")
    first, second = run_cron(client, "e"), run_cron(client, "e")
    assert client.store.pending_runs("e") == [first.run_id, second.run_id]


def test_cli_add_list_run_remove(client: Client, settings: Settings) -> None:
    runner = CliRunner(env=worker_env(settings))
    added = runner.invoke(
        cron,
        [
            "add", "triage", "--schedule", "0 9 * * 1-5", "--session-template",
            "triage-{date}", "--prompt", "Triage new issues", "--priority", "low",
            "--retry-on", "overloaded",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cron, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    row = json.loads(listed.output)
    assert row["name"] == "triage" and row["session_template"] == "triage-{date}"
    assert row["job"] == {
        "prompt": "Triage new issues",
        "priority": "low",
        "retry_on": ["overloaded"],
    }
    fired = runner.invoke(cron, ["run", "triage", "--json"])
    assert fired.exit_code == 0, fired.output
    firing = json.loads(fired.output)
    assert firing["session_id"].startswith("triage-")
    assert client.store.pending_runs(firing["session_id"]) == [firing["run_id"]]
    assert runner.invoke(cron, ["remove", "triage"]).exit_code == 0
    assert runner.invoke(cron, ["remove", "triage"]).exit_code == 4
    assert runner.invoke(cron, ["run", "triage"]).exit_code == 4
    bad = runner.invoke(cron, ["add", "x", "--schedule", "bad", "--session", "s", "--prompt", "p"])
    assert bad.exit_code == 2 and "schedule" in bad.output


def test_a_worker_acl_user_claims_and_fires_ticks(
    client: Client,
    role_client: RoleClient,  # noqa: F811
) -> None:
    worker = role_client("worker")
    spec = add_cron(client, "acl", schedule=EVERY_SECOND, session_id="acl", prompt="hi")
    fired = tick_crons(worker.store, float(int(spec.created_at)) + 1.5)
    assert [f.run_id for f in fired] == client.store.pending_runs("acl")
    assert len(fired) == 1
