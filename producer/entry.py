"""The `claude-queue` command's entry point (and `python -m producer`'s).

The command line is loaded with the garbage collector paused. Loading it creates
hundreds of thousands of objects (pydantic models, dataclasses, redis-py, RQ, click),
none of them garbage, and the collector, triggered every 700 allocations, walked them
again and again: `claude-queue sessions` took 0.46 s of CPU, and 0.33 s without those
walks. What was loaded is then frozen (`gc.freeze`): later collections skip it, and a
worker's forked work horses leave its memory pages shared (the gc docs' advice for a
process that forks).
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    try:
        from producer.cli import main as command_line
    finally:
        gc.freeze()
        gc.enable()
    command_line()
