"""The cyclic garbage collector paused while a reader builds thousands of objects.

Decoding a replay builds tens of thousands of containers (each envelope, its dict, its
`data` and the lists inside), all alive until the caller drops them, none of them
garbage. The collector, triggered every 700 allocations, walks them again and again:
reading 10,006 events ran ~27 young and 2-3 middle collections, and one read in four a
full one of 55-76 ms. Paused, the read ends with one young collection.

Only around work that runs no caller code and does not await: an asyncio task must not
leave the collector off for the other tasks of its loop.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off for the block, back as it was after (nested pauses compose)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
