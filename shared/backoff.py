"""One backoff policy for everything that reconnects or retries: capped exponential, full jitter.

Jitter matters: without it every client that lost Redis retries at the same instants,
so a restarted Redis is hit by all of them at once. A policy is pure data; the random
source is passed in, so tests can pin it.

    delays = reconnect_backoff(settings).delays()
    while True:
        try:
            ...
            delays.reset()  # after a success the next failure starts small again
        except redis.ConnectionError:
            time.sleep(next(delays))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared.settings import Settings

# Returns a float in [0, 1), like random.random.
RandomSource = Callable[[], float]
# The default source: the OS's randomness, which leaves the `random` module's shared state
# alone (an application may seed that for its own ends; a reconnect loop in a background
# thread drawing from it also upsets hypothesis in a test running meanwhile, seen in CI).
SYSTEM_RANDOM: RandomSource = random.SystemRandom().random


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: attempt n waits up to min(max_s, first_s * factor**n).

    `jitter` is the fraction of that cap drawn at random: 1.0 (full jitter) waits
    anywhere in (0, cap], 0.0 always waits the cap itself.
    """

    first_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(f"need 0 < first_s <= max_s; got {self.first_s}, {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1; got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1]; got {self.jitter}")

    def cap(self, attempt: int) -> float:
        """The longest wait before retry number `attempt` (0-based)."""
        try:
            grown = self.first_s * self.factor ** max(attempt, 0)
        except OverflowError:  # float ** int overflows long after the cap is reached
            return self.max_s
        return min(self.max_s, grown)

    def next_delay(self, attempt: int, rand: RandomSource = SYSTEM_RANDOM) -> float:
        """The wait before retry number `attempt`: the cap, less a random share of it."""
        cap = self.cap(attempt)
        # 1 - rand() lies in (0, 1], so the wait is never exactly 0 (no hot loop).
        return cap * (1.0 - self.jitter * rand())

    def delays(self, rand: RandomSource = SYSTEM_RANDOM) -> Delays:
        """An endless iterator of waits, one per failed attempt, with `reset()`."""
        return Delays(self, rand)


class Delays(Iterator[float]):
    """The waits of one retry loop; `reset()` after a success starts again from `first_s`."""

    __slots__ = ("_attempt", "_policy", "_rand")

    def __init__(self, policy: Backoff, rand: RandomSource = SYSTEM_RANDOM) -> None:
        self._policy = policy
        self._rand = rand
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many waits were handed out since the last reset."""
        return self._attempt

    def __next__(self) -> float:
        delay = self._policy.next_delay(self._attempt, self._rand)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the first (shortest) wait."""
        self._attempt = 0


def reconnect_backoff(settings: Settings) -> Backoff:
    """Clients (streams, the fan-out) reconnecting to Redis."""
    del settings  # room for RECONNECT_* settings; the caps are fixed until then
    return Backoff(first_s=0.1, max_s=5.0)


def retry_backoff(settings: Settings) -> Backoff:
    """Workers retrying a Redis write during an outage.

    Capped at the lease renewal interval, so once Redis is back a worker retries
    in time to renew its lease before it expires (the TTL is at least twice that).
    """
    cap = min(2.0, settings.lease_renew_s)
    return Backoff(first_s=min(0.05, cap), max_s=cap)
