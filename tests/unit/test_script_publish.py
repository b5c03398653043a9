"""Every Lua script that appends events also publishes them: `append` only logs
(shared/runstore/scripts.py), so a script that forgot `publish` would leave live streams
to find its events by gap-filling, a delay nobody would see in a test of results."""

from __future__ import annotations

import re

import pytest

from shared import limits
from shared.runstore import scripts

_APPENDS = re.compile(r"\bappend\(")
_PUBLISHES = re.compile(r"\bpublish\(ARGV\[\d+\]\)")


def _appending_scripts() -> list[tuple[str, str]]:
    found = []
    for module in (scripts, limits):
        for name, value in vars(module).items():
            if (
                isinstance(value, str)
                and value.startswith(scripts._APPEND_FN)
                and name != "_APPEND_FN"
            ):
                found.append((f"{module.__name__}.{name}", value[len(scripts._APPEND_FN) :]))
    return found


def test_the_scripts_that_append_are_found() -> None:
    names = {name.rsplit(".", 1)[1] for name, _ in _appending_scripts()}
    assert {"SUBMIT_LUA", "PUBLISH_LUA", "FORCE_FINISH_LUA", "CANCEL_LUA", "ACQUIRE_LUA"} <= names


@pytest.mark.parametrize(("name", "body"), _appending_scripts())
def test_each_append_is_followed_by_a_publish(name: str, body: str) -> None:
    appends = [m.end() for m in _APPENDS.finditer(body)]
    assert appends, f"{name} appends nothing"
    publishes = [m.start() for m in _PUBLISHES.finditer(body)]
    assert publishes and max(publishes) > max(appends), f"{name} never publishes"
