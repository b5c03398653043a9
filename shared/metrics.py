"""What workers and the gateway share for Prometheus metrics.

- The families read from Redis at scrape time (queue depth, workers, runs in
  progress, Redis up), built by one pure function that a sync shell (worker) and
  an async shell (gateway) feed.
- Label hygiene: a value that came from outside (a model name) becomes a label only
  if it looks like one; anything else is `other`, so labels stay low-cardinality.
- prometheus-client's multiprocess mode: a private directory per pool, chosen
  before prometheus_client is imported (it picks its value store at import time),
  and `absorb_dead_process` folding a finished process's counters into the
  survivor's own file so the directory does not grow by a file set per work horse.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

PREFIX = "claude_queue_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\[\]-]{0,63}$")
# Files of a dead process whose values are summed at scrape time (never "live").
_SUMMED_KINDS = ("counter", "histogram")
_ARCHIVE_TAG = "absorbed"
# Present at 0 when no worker is in them, so `no workers` is a value, not an absence.
_ALWAYS_SHOWN_STATES = ("busy", "idle")
_LOCK_FILE = "absorb.lock"


def label_value(text: object, *, allowed: frozenset[str] | None = None) -> str:
    """`text` as a label value if it is a short plain name (and allowed), else `other`."""
    if not isinstance(text, str) or not _LABEL.match(text):
        return OTHER
    if allowed is not None and text not in allowed:
        return OTHER
    return text


@contextlib.contextmanager
def metrics_directory(given: str | None) -> Iterator[str]:
    """The directory this process writes metrics to: `given` (a pool's, left as it is)
    or a private one. Enter it before anything imports prometheus_client."""
    if given is None:
        with private_multiprocess_dir() as path:
            yield path
        return
    use_multiprocess_dir(given)
    yield given


@contextlib.contextmanager
def private_multiprocess_dir() -> Iterator[str]:
    """A fresh directory for this pool's metric files, removed when the pool ends."""
    path = tempfile.mkdtemp(prefix="claude-queue-metrics-")
    try:
        use_multiprocess_dir(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def use_multiprocess_dir(path: str) -> None:
    """Make this process (and the processes it starts) write metrics into `path`.

    Raises RuntimeError if prometheus_client was imported before without it: its
    values would then live in this process's memory and never reach the scrape.
    """
    if not os.path.isdir(path):
        raise RuntimeError(f"metrics directory {path!r} does not exist")
    os.environ[MULTIPROC_ENV] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "prometheus_client was imported before the metrics directory was set; "
            "its values would not be shared"
        )


def absorb_dead_process(path: str, pid: int, *, into_pid: int) -> None:
    """Fold the counters and histograms of dead process `pid` into `into_pid`'s archive
    files, and drop its live gauges: what it counted stays, its files go."""
    from prometheus_client.mmap_dict import MmapedDict
    from prometheus_client.multiprocess import mark_process_dead

    with directory_lock(path):  # a scrape sees the values before or after, never both
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        _absorb(path, pid, into_pid, MmapedDict)


def _absorb(path: str, pid: int, into_pid: int, mmaped_dict: Any) -> None:
    for kind in _SUMMED_KINDS:
        source = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(source):
            continue
        # `<kind>_<tag><pid>.db`: the collector reads the kind before the first `_`.
        archive = mmaped_dict(os.path.join(path, f"{kind}_{_ARCHIVE_TAG}{into_pid}.db"))
        try:
            for key, value, _stamp, _pos in mmaped_dict.read_all_values_from_file(source):
                current, stamp = archive.read_value(key)
                archive.write_value(key, current + value, stamp)
        finally:
            archive.close()
        os.remove(source)
    for leftover in glob.glob(os.path.join(path, f"gauge_*_{pid}.db")):
        # Gauges whose mode keeps a dead process's value (max, min, sum) are not used.
        os.remove(leftover)


@contextlib.contextmanager
def directory_lock(path: str) -> Iterator[None]:
    """An exclusive lock between absorbing a dead process's files and reading them all."""
    with open(os.path.join(path, _LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def multiprocess_collector(path: str) -> Collector:
    """Every process's values in `path`, read under the directory lock."""
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector

    inner = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]

    class Locked(Collector):
        def collect(self) -> Iterable[Metric]:
            with directory_lock(path):
                return list(inner.collect())  # type: ignore[no-untyped-call]

    return Locked()


def queue_families(
    *,
    queue: str,
    redis_up: bool,
    queued: int = 0,
    workers_by_state: Mapping[str, int] | None = None,
    running: int = 0,
) -> list[Metric]:
    """The scrape-time families of one queue, from what was read from Redis."""
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily(
        PREFIX + "redis_up", "1 if Redis answered this scrape, else 0.", value=int(redis_up)
    )
    if not redis_up:
        return [up]
    depth = GaugeMetricFamily(
        PREFIX + "queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"]
    )
    depth.add_metric([queue], queued)
    workers = GaugeMetricFamily(
        PREFIX + "workers", "RQ workers listening on the queue, by state.", labels=["state"]
    )
    counts = dict.fromkeys(_ALWAYS_SHOWN_STATES, 0)
    for state, count in (workers_by_state or {}).items():
        shown = label_value(state)
        counts[shown] = counts.get(shown, 0) + count
    for state, count in sorted(counts.items()):
        workers.add_metric([state], count)
    in_progress = GaugeMetricFamily(
        PREFIX + "runs_running", "Runs in progress (holding a session lease).", value=running
    )
    return [up, depth, workers, in_progress]
