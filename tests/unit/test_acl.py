"""ACL rule rendering and `claude-queue acl`: pure, no Redis."""

from __future__ import annotations

import hashlib
import shlex

import pytest
from click.testing import CliRunner

from producer.cli import main
from shared.acl import (
    ROLES,
    AclError,
    AclRules,
    Role,
    database_of,
    role_rules,
    script_sha,
    setuser_args,
    setuser_line,
)
from shared.runstore.scripts import CANCEL_LUA, DECIDE_LUA, PUBLISH_LUA, SUBMIT_LUA

# Commands that change data; a reader must hold none of them.
_WRITES = {"+set", "+incr", "+hset", "+xadd", "+publish", "+unlink", "+del", "+rpush", "+lrem"}


def _rules(role: Role, *, queue_name: str = "claude-queue", database: int = 0) -> AclRules:
    return role_rules(role, key_prefix="cq", queue_name=queue_name, database=database)


def test_reader_only_reads_session_logs_open_requests_and_follows_their_channels() -> None:
    rules = _rules("reader")
    assert not _WRITES & set(rules.commands)
    assert not [c for c in rules.commands if c.startswith(("+eval", "+script", "+@"))]
    assert "+hsetnx" not in rules.commands
    run = "cq:{*}:run:" + "?" * 32
    assert rules.keys == (
        "%R~cq:{*}:log",
        "%R~cq:{*}:seq",
        "%R~cq:{*}:pending",
        f"%R~{run}:approvals",
    )
    assert rules.channels == ("&cq:{*}:events@0",)
    assert rules.selectors == ()


def test_producer_runs_only_the_submit_and_cancel_scripts() -> None:
    commands = _rules("producer").commands
    evals = sorted(c for c in commands if c.startswith("+eval"))
    expected = sorted(f"+evalsha|{script_sha(s)}" for s in (SUBMIT_LUA, CANCEL_LUA))
    assert evals == expected
    assert f"+evalsha|{script_sha(PUBLISH_LUA)}" not in commands
    assert script_sha(SUBMIT_LUA) == hashlib.sha1(SUBMIT_LUA.encode()).hexdigest()  # noqa: S324


def test_producer_reads_but_never_writes_worker_state() -> None:
    rules = _rules("producer")
    assert "%R~cq:{*}:state" in rules.keys
    assert not [k for k in rules.keys if "transcript" in k]  # conversations stay private
    assert not [k for k in rules.keys if "lease" in k or "fence" in k]
    assert "%W~rq:job:*" in rules.keys  # it writes jobs, and reads no other producer's
    # Deleting a session is the one thing it may do to every session key; of a
    # transcript it may learn only the size.
    assert rules.selectors[:2] == (
        ("+unlink", "~cq:{*}:*"),
        ("+hstrlen", "%R~cq:{*}:transcript"),
    )


def test_producer_writes_approvals_only_through_the_decide_script() -> None:
    rules = _rules("producer")
    run = "cq:{*}:run:" + "?" * 32
    assert f"%R~{run}:approvals" in rules.keys  # open requests: read
    assert f"~{run}:approvals" not in rules.keys
    assert "+hsetnx" not in rules.commands
    # The decision's HSETNX and the script that sends it, in a selector of their own.
    decide = (f"+evalsha|{script_sha(DECIDE_LUA)}", "+hsetnx", f"~{run}", f"~{run}:approvals")
    assert decide in rules.selectors
    assert f"+evalsha|{script_sha(DECIDE_LUA)}" not in rules.commands
    # It PUBLISHes the answer on the run's control channel.
    assert "+publish" in rules.commands
    assert "&cq:{*}:run:*:control@0" in rules.channels


def test_run_record_pattern_excludes_the_wait_marker() -> None:
    run_pattern = "~cq:{*}:run:" + "?" * 32
    assert run_pattern in _rules("producer").keys


def test_worker_loses_dangerous_commands_after_its_categories() -> None:
    commands = list(_rules("worker").commands)
    assert commands.index("-@dangerous") > commands.index("+@write")
    assert commands.index("+info|server") > commands.index("-@dangerous")
    assert _rules("worker").keys == ("~cq:*", "~rq:*")


@pytest.mark.parametrize("role", ROLES)
def test_every_role_is_pinned_to_its_database(role: Role) -> None:
    rules = _rules(role, database=11)
    assert "+select|11" in rules.commands
    assert not [c for c in rules.commands if c.startswith("+select") and c != "+select|11"]
    assert rules.tokens()[:5] == ["on", "resetkeys", "resetchannels", "clearselectors", "-@all"]


def test_database_comes_from_the_url() -> None:
    assert database_of("redis://localhost:6379/11") == 11
    assert database_of("redis://:pw@localhost:6379") == 0
    assert database_of("unix:///run/redis.sock?db=3") == 3


def test_queue_names_are_glob_escaped() -> None:
    assert r"~rq:queue:q\*" in _rules("producer", queue_name="q*").keys
    assert r"%R~rq:workers:a\?b\[c\]" in _rules("producer", queue_name="a?b[c]").keys


@pytest.mark.parametrize("bad", ["two words", "quo'te", 'dq"', "tab\there", "(x)", ""])
def test_names_that_cannot_be_one_acl_argument_are_refused(bad: str) -> None:
    with pytest.raises(AclError):
        _rules("producer", queue_name=bad)
    with pytest.raises(AclError):
        setuser_args(_rules("reader"), bad)


def test_printed_line_splits_back_into_the_arguments() -> None:
    rules = _rules("producer")
    line = setuser_line(rules, "cq-producer", password="pw")
    assert shlex.split(line) == [
        "ACL",
        "SETUSER",
        *setuser_args(rules, "cq-producer", password="pw"),
    ]
    assert "(+unlink ~cq:{*}:*)" in shlex.split(line)


def test_password_appears_only_as_its_sha256() -> None:
    args = setuser_args(_rules("reader"), "u", password="s3cret-pw")
    digest = hashlib.sha256(b"s3cret-pw").hexdigest()
    assert args[:3] == ["u", "resetpass", f"#{digest}"]
    assert not [a for a in args if "s3cret-pw" in a]
    # Without a password the line leaves the user's passwords alone.
    assert not [a for a in setuser_args(_rules("reader"), "u") if a.startswith((">", "#"))]
    assert "resetpass" not in setuser_args(_rules("reader"), "u")


def test_cli_prints_the_line_for_the_configured_deployment() -> None:
    env = {
        "CLAUDE_QUEUE_REDIS_URL": "redis://:hunter2@redis:6379/4",
        "CLAUDE_QUEUE_KEY_PREFIX": "team",
        "CLAUDE_QUEUE_QUEUE_NAME": "jobs",
        "ACL_PW": "p4ss",
    }
    result = CliRunner().invoke(main, ["acl", "producer", "--password-env", "ACL_PW"], env=env)
    assert result.exit_code == 0, result.output
    words = shlex.split(result.stdout)
    assert words[:3] == ["ACL", "SETUSER", "team-producer"]
    assert "+select|4" in words
    assert "~rq:queue:jobs" in words
    assert "p4ss" not in result.output
    assert "hunter2" not in result.output
    assert f"#{hashlib.sha256(b'p4ss').hexdigest()}" in words


def test_cli_without_password_says_so_on_stderr() -> None:
    result = CliRunner().invoke(main, ["acl", "reader", "--user", "viewer"])
    assert result.exit_code == 0, result.output
    assert shlex.split(result.stdout)[2] == "viewer"
    assert "no password" in result.stderr


@pytest.mark.parametrize("args", [["acl", "admin"], ["acl", "reader", "--password-env", "NOPE"]])
def test_cli_refuses_unknown_roles_and_missing_passwords(args: list[str]) -> None:
    result = CliRunner().invoke(main, args, env={"NOPE": ""})
    assert result.exit_code == 2
    assert "SETUSER" not in result.stdout
