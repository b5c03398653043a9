"""What a drainer does with the archive outbox, without I/O.

The outbox is a Redis stream read through one consumer group: an entry stays pending
until a drainer acknowledges it after PostgreSQL committed, so a drainer that dies
mid-copy leaves it to another (XAUTOCLAIM once idle past ARCHIVE_CLAIM_IDLE_S), and a
PostgreSQL outage only leaves entries pending until it is back. Delivery is at least
once; every write is idempotent (events on (session_id, seq), runs on run_id).

Each entry names a run and the seq of its `finished`. The drainer copies the session's
log from the highest seq already archived up to that seq, so the archive holds each
session as one unbroken prefix of its log (other runs' events on the way included),
then builds the run's row from the run's events, wherever they were archived.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

OUTBOX_GROUP = "archivers"
READ_COUNT = 32  # outbox entries taken per read
PRUNE_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class CopyRange:
    """Session log seqs to copy: after < seq <= upto (empty when after >= upto)."""

    after: int
    upto: int

    @property
    def empty(self) -> bool:
        return self.after >= self.upto


def copy_range(finished_seq: int, archived_upto: int) -> CopyRange:
    """The seqs an outbox entry copies, given the highest seq already archived."""
    return CopyRange(after=min(archived_upto, finished_seq), upto=finished_seq)


class Source(Enum):
    """Where a drainer takes its next entries from."""

    OWN_PENDING = "own_pending"  # read before but never acknowledged (a failure, a restart)
    STALE = "stale"  # another drainer's, idle too long (it died)
    NEW = "new"


@dataclass(slots=True)
class DrainPlan:
    """Which source to read next: own pending first, then stale ones now and then, then new."""

    claim_every_s: float
    own_pending: bool = True  # until a read of our pending list comes back empty
    claimed_at: float | None = None

    def next_source(self, now: float) -> Source:
        if self.own_pending:
            return Source.OWN_PENDING
        if self.claimed_at is None or now - self.claimed_at >= self.claim_every_s:
            return Source.STALE
        return Source.NEW

    def read(self, source: Source, count: int, now: float) -> None:
        """Note what a read from `source` returned (`count` entries)."""
        if source is Source.OWN_PENDING:
            self.own_pending = count > 0
        elif source is Source.STALE:
            self.claimed_at = None if count else now  # claimed some: there may be more

    def failed(self) -> None:
        """A copy failed: the entries stay pending on us; read them again first."""
        self.own_pending = True
