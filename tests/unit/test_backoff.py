"""shared/backoff.py: waits stay within their caps, caps grow and stop, jitter spreads."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.backoff import Backoff, reconnect_backoff, retry_backoff
from shared.settings import Settings

POLICIES = st.builds(
    Backoff,
    first_s=st.floats(min_value=0.001, max_value=1.0),
    max_s=st.floats(min_value=1.0, max_value=60.0),
    factor=st.floats(min_value=1.0, max_value=4.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
UNIT = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(POLICIES, st.integers(min_value=0, max_value=10_000), UNIT)
def test_every_wait_lies_within_zero_and_its_cap(policy: Backoff, attempt: int, r: float) -> None:
    delay = policy.next_delay(attempt, lambda: r)
    assert 0 < delay <= policy.cap(attempt) <= policy.max_s


@given(POLICIES, st.integers(min_value=0, max_value=5_000))
def test_caps_never_decrease_and_start_at_first(policy: Backoff, attempt: int) -> None:
    assert policy.cap(0) == policy.first_s
    assert policy.cap(attempt) <= policy.cap(attempt + 1)


def test_caps_double_up_to_the_maximum() -> None:
    policy = Backoff(first_s=0.1, max_s=1.0, factor=2.0, jitter=0.0)
    waits = list(itertools.islice(policy.delays(), 6))
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_a_huge_attempt_number_is_the_cap_not_an_overflow() -> None:
    assert Backoff(first_s=0.1, max_s=3.0, factor=10.0).cap(10**6) == 3.0


@given(POLICIES, st.lists(UNIT, min_size=1, max_size=50))
def test_delays_follow_the_policy_and_reset_starts_over(
    policy: Backoff, draws: list[float]
) -> None:
    source = iter(draws + draws)
    delays = policy.delays(lambda: next(source))
    first = [next(delays) for _ in draws]
    assert delays.attempt == len(draws)
    delays.reset()
    assert delays.attempt == 0
    assert [next(delays) for _ in draws] == first
    replay = iter(draws)
    assert first == [policy.next_delay(n, lambda: next(replay)) for n in range(len(draws))]


def test_full_jitter_spreads_waits_over_the_whole_cap() -> None:
    rng = random.Random(11)
    policy = Backoff(first_s=1.0, max_s=1.0, jitter=1.0)
    waits = [policy.next_delay(0, rng.random) for _ in range(2000)]
    # Ten clients retrying together must not land on one instant: fill every tenth.
    assert {int(wait * 10) for wait in waits} >= set(range(10))
    assert max(waits) <= 1.0


def test_partial_jitter_keeps_the_lower_part_of_the_cap() -> None:
    rng = random.Random(11)
    policy = Backoff(first_s=2.0, max_s=2.0, jitter=0.25)
    waits = [policy.next_delay(0, rng.random) for _ in range(500)]
    assert min(waits) > 1.5
    assert max(waits) - min(waits) > 0.4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_s": 0.0},
        {"first_s": 2.0, "max_s": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_worker_retries_stay_under_the_lease_renewal() -> None:
    tight = Settings(lease_ttl_s=1.0, lease_renew_s=0.01)
    assert retry_backoff(tight).max_s == 0.01
    assert retry_backoff(Settings()).max_s == 2.0
    assert reconnect_backoff(Settings()).max_s == 5.0
