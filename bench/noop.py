"""The bare RQ job of the dispatch baseline: publish a completion signal, nothing else."""

from __future__ import annotations

from rq import get_current_job


def noop(channel: str) -> None:
    """Runs in a plain `rq worker`'s work horse; the bench waits on this PUBLISH."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("noop runs only as an RQ job")
    job.connection.publish(channel, b"done")
