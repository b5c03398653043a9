#!/usr/bin/env python3
"""The fake `claude` (tests/fakecli/claude) with scenarios that fail only the first time.

Retry tests need a run that fails and a retry of it, with the same prompt, that does
not. Point the worker's CLI path at this file: it loads the fake CLI, adds the
scenarios below to its table, and runs it; every other scenario is the fake's own.

- `FAKE: hang_once marker=PATH`: PATH missing: create it, print the text `hanging once`,
  then hang (as `hang`). Else `echo`.
- `FAKE: api_error status=529 retries=2 marker=PATH`: PATH missing (or no marker given):
  create it, print `retries` system/api_retry lines, then the CLI's give-up: an assistant
  API-error message and an `is_error` result, both with `api_error_status`; exit 1.
  Else `echo`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

_FAKE = Path(__file__).resolve().with_name("claude")
# What the real CLI calls the error of its give-up message (tests/fixtures/cli/error-*.jsonl).
_ERROR_NAMES = {429: ("rate_limit", "rate_limit_error"), 529: ("server_error", "overloaded_error")}


def _load_fake() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("fake_claude", str(_FAKE))
    spec = importlib.util.spec_from_loader("fake_claude", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


fake = _load_fake()


def _first_time(run: Any) -> bool:
    """True (and the marker made) unless the marker exists: the first attempt."""
    marker = run.params.get("marker")
    if marker is None:
        return True
    path = Path(marker)
    if path.exists():
        return False
    path.touch()
    return True


def s_hang_once(run: Any) -> int:
    if not _first_time(run):
        return int(fake.s_echo(run))
    run.answer([fake.text_block("hanging once")])  # tests wait for it: the marker is made
    return int(fake.s_hang(run))


def s_api_error(run: Any) -> int:
    if not _first_time(run):
        return int(fake.s_echo(run))
    status = run.iparam("status", 529)
    error, error_type = _ERROR_NAMES.get(status, ("server_error", "api_error"))
    retries = run.iparam("retries", 2)
    for attempt in range(1, retries + 1):
        retry = {
            "type": "system",
            "subtype": "api_retry",
            "attempt": attempt,
            "max_retries": retries,
            "retry_delay_ms": 1,
            "error_status": status,
            "error": error,
            "session_id": run.session_id,
            "uuid": str(uuid.uuid4()),
        }
        run.emit(retry)
    text = f"API Error: {status} fake {error_type} injected by tests/fakecli/faults.py"
    api = {"api_error_status": status, "api_error_type": error_type}
    run.answer(
        [fake.text_block(text)],
        model="<synthetic>",
        error=error,
        is_api_error_message=True,
        **api,
    )
    result = run.result(is_error=True, num_turns=1)
    run.emit({**result, **api, "terminal_reason": "api_error", "result": text})
    run.finished = True
    return int(run.iparam("exit", 1))


fake.SCENARIOS.update({"hang_once": s_hang_once, "api_error": s_api_error})

if __name__ == "__main__":
    fake.main()
