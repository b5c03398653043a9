"""The line a spare work horse reads (worker/spare.py): one valid line starts a job,
anything else, never an exception, starts nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.spare import Handoff, read_handoff

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
        b'{"job_id": "a b", "queue": "q", "execution_id": "e"}\n',  # not a name
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
