"""The line a spare work horse reads (worker/spare.py): one valid line starts a job,
anything else, never an exception, starts nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rq import Queue
from rq.executions import Execution
from rq.job import Job

from worker.handoff import Handoff, await_done, read_handoff
from worker.spare import Spare, _hand_over

GOOD = Handoff(job_id="0f" * 16, queue="claude:high", execution_id="ab12cd34")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def _read(data: bytes) -> Handoff | None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
        os.close(write_fd)
        write_fd = -1
        return read_handoff(read_fd)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_a_valid_line_round_trips() -> None:
    assert _read(GOOD.line()) == GOOD


def test_the_line_is_read_without_waiting_for_the_pipe_to_close(
    pipe: tuple[int, int],
) -> None:
    # Other processes hold copies of the write end: the spare must not wait for EOF.
    read_fd, write_fd = pipe
    os.write(write_fd, GOOD.line())
    assert read_handoff(read_fd) == GOOD


def test_only_the_first_line_counts() -> None:
    other = Handoff(job_id="other", queue="q", execution_id="e")
    assert _read(GOOD.line() + other.line()) == GOOD


@pytest.mark.parametrize(
    "data",
    [
        b"",  # the worker closed the pipe: no job
        GOOD.line()[:-1],  # no newline before EOF
        b"not json\n",
        b'{"job_id": "a", "queue": "q"}\n',  # a field missing
        b'{"job_id": "a", "queue": "q", "execution_id": "e", "more": 1}\n',
        b'{"job_id": "a b", "queue": "q", "execution_id": "e"}\n',  # a space
        b'{"job_id": "a\\n", "queue": "q", "execution_id": "e"}\n',
        b'{"job_id": "' + b"a" * 600 + b'", "queue": "q", "execution_id": "e"}\n',
        b"x" * 10_000 + b"\n",  # past the line limit before any newline
    ],
)
def test_anything_else_starts_nothing(data: bytes) -> None:
    assert _read(data) is None


def test_a_name_that_cannot_be_handed_over_is_refused_before_writing() -> None:
    with pytest.raises(ValueError):
        Handoff(job_id="rq:job:../x y", queue="q", execution_id="e")


@given(st.binary(max_size=6000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = _read(data)
    assert result is None or isinstance(result, Handoff)


def _objects(job_id: str) -> tuple[Job, Queue, Execution]:
    # Stand-ins with the attributes _hand_over reads (RQ's objects need Redis).
    job = cast(Job, SimpleNamespace(id=job_id))
    queue = cast(Queue, SimpleNamespace(name="claude"))
    return job, queue, cast(Execution, SimpleNamespace(id="ex1"))


def test_a_handover_writes_one_line_and_leaves_the_pipe_open_for_the_next() -> None:
    read_fd, write_fd = os.pipe()
    try:
        spare = Spare(pid=0, handoff_fd=write_fd, done_fd=-1)
        assert _hand_over(spare, *_objects("run1"))
        assert read_handoff(read_fd) == Handoff(job_id="run1", queue="claude", execution_id="ex1")
        assert _hand_over(spare, *_objects("run2"))  # the same spare's next job
        assert read_handoff(read_fd) == Handoff(job_id="run2", queue="claude", execution_id="ex1")
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_job_id_it_cannot_carry_is_not_handed_over() -> None:
    read_fd, write_fd = os.pipe()
    try:
        assert not _hand_over(Spare(pid=0, handoff_fd=write_fd, done_fd=-1), *_objects("a b"))
        os.close(write_fd)
        assert read_handoff(read_fd) is None  # end of file, nothing written
    finally:
        os.close(read_fd)


def test_a_spare_that_is_gone_is_not_handed_the_job() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # as when the spare died: writing gets EPIPE
    try:
        assert not _hand_over(Spare(pid=0, handoff_fd=write_fd, done_fd=-1), *_objects("run1"))
    finally:
        os.close(write_fd)


def test_the_done_byte_is_seen_and_left_where_it_is(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.write(write_fd, b".")
    assert await_done(read_fd)
    assert await_done(read_fd)  # seen again: a wait an alarm cut short loses nothing
    assert os.read(read_fd, 64) == b"."


def test_a_closed_pipe_without_the_byte_is_an_exit() -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    try:
        assert not await_done(read_fd)
    finally:
        os.close(read_fd)


def test_a_byte_written_before_the_exit_still_counts_as_done() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b".")
    os.close(write_fd)
    try:
        assert await_done(read_fd)
    finally:
        os.close(read_fd)
