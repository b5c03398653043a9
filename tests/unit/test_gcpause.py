"""gc_paused: the collector off inside, back as it was after, even after an error."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.gcpause import gc_paused


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    if was_enabled:  # as it was before the test, whatever the test left
        gc.enable()
    else:
        gc.disable()


def test_off_inside_and_on_after() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the inner one leaves it off for the outer
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_error() -> None:
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("decode failed")
    assert gc.isenabled()


def test_left_off_if_it_was_off() -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()
