"""Stopping an asyncio task so that it really stops.

One `Task.cancel()` is not always enough on Python 3.11. There `asyncio.wait_for`
returns its result, and drops the cancellation, when the cancel arrives in the step
its wait ends; redis-py waits that way when it sends a command. A task cancelled
just then (a gateway hub stopped while it subscribes) would carry on, and whoever
waits for it (`serve` on SIGTERM) would wait for ever. So the cancel is repeated
until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

RECANCEL_EVERY_S: Final = 0.05


async def cancel_and_wait(task: asyncio.Task[Any], every_s: float = RECANCEL_EVERY_S) -> None:
    """Cancel `task` (again every `every_s` while it runs) and return once it has ended.

    The task's own end (result, exception or cancellation) is not raised here; a
    cancellation of the caller is.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
