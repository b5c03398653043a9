"""Permission requests for people: rendering, answer building and outcomes. Pure, no Redis."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from producer.approvals import (
    AnswerOutcome,
    AnswerResult,
    decision_for,
    expires_in_s,
    input_preview,
    prepare_answer,
)
from producer.cancelling import require_grace, wait_limit_s
from producer.cli_approvals import outcome_text
from producer.errors import InvalidJobError
from producer.render import Renderer
from shared.control import MAX_DECIDED_BY_CHARS, MAX_GRACE_S, MAX_MESSAGE_CHARS
from shared.events import DecisionReason, Envelope

NOW = 1_000_000.0
RUN_ID = "a" * 32


def _envelope(event_type: str, data: dict[str, Any]) -> Envelope:
    return Envelope(seq=5, session_id="s1", run_id=RUN_ID, ts=NOW, type=event_type, data=data)


def _shown(*envelopes: Envelope) -> str:
    out = io.StringIO()
    renderer = Renderer(
        Console(file=out, width=200, highlight=False, color_system=None), clock=lambda: NOW
    )
    for envelope in envelopes:
        renderer.show(envelope)
    return out.getvalue()


def _request(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": "r1",
        "tool_name": "Bash",
        "input": {"command": "rm -rf build/"},
        "tool_use_id": "toolu_1",
        "description": "Remove the build folder",
        "suggestions": [],
        "expires_at": NOW + 90.5,
    }
    return data | overrides


def test_a_request_shows_tool_description_input_id_and_expiry() -> None:
    text = _shown(_envelope("permission_request", _request()))
    assert "? permission Bash — Remove the build folder" in text
    assert 'input {"command": "rm -rf build/"}' in text
    assert "request r1 · expires in 90 s" in text


def test_an_expired_request_says_so_and_markup_in_it_is_text() -> None:
    text = _shown(
        _envelope(
            "permission_request",
            _request(tool_name="[bold]X[/bold]", description=None, expires_at=NOW - 1),
        )
    )
    assert "[bold]X[/bold]" in text
    assert "—" not in text  # no description, no dash
    assert "request r1 · expired" in text


def test_a_long_input_is_cut_but_keeps_far_more_than_one_line() -> None:
    shown = _shown(_envelope("permission_request", _request(input={"content": "x" * 5000})))
    text = shown.replace("\n", "")  # the terminal folds it; the text is what counts
    assert "x" * 1900 in text
    assert "x" * 2100 not in text
    assert "chars)" in text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"behavior": "allow", "decided_by": "alice", "reason": "answered"},
            "✓ allowed request r1 by alice (answered)",
        ),
        (
            {"behavior": "deny", "message": "timed out", "reason": "timed_out"},
            "✗ denied request r1 (nobody answered in time): timed out",
        ),
        (
            {"behavior": "deny", "reason": "run_ended"},
            "✗ denied request r1 (the run ended first)",
        ),
        # A newer worker's reason is shown as it came.
        (
            {"behavior": "deny", "decided_by": "policy", "reason": "by_rule"},
            "✗ denied request r1 by policy (by_rule)",
        ),
    ],
)
def test_a_decision_says_allowed_or_denied_by_whom_and_why(
    data: dict[str, Any], expected: str
) -> None:
    text = _shown(_envelope("permission_decision", {"request_id": "r1", **data}))
    assert text.strip() == expected


def test_a_broken_request_is_shown_plainly_not_raised() -> None:
    text = _shown(_envelope("permission_request", {"tool_name": "Bash"}))
    assert text.startswith("· permission_request")


def test_a_deny_without_message_names_who_denied() -> None:
    assert decision_for(allow=False, decided_by="bob").message == "denied by bob"
    assert decision_for(allow=False).message == "denied by a person"
    assert decision_for(allow=False, message="not today").message == "not today"
    allowed = decision_for(allow=True, decided_by="bob", updated_input={"command": "ls"})
    assert (allowed.behavior, allowed.message, allowed.reason) == (
        "allow",
        None,
        DecisionReason.ANSWERED,
    )
    assert allowed.updated_input == {"command": "ls"}


@pytest.mark.parametrize(
    "fields",
    [
        {"message": "m" * (MAX_MESSAGE_CHARS + 1)},
        {"decided_by": "d" * (MAX_DECIDED_BY_CHARS + 1)},
    ],
)
def test_answers_out_of_bounds_are_usage_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidJobError, match="invalid answer"):
        decision_for(allow=False, **fields)


@pytest.mark.parametrize(
    ("session_id", "request_id", "run_id", "field"),
    [
        ("s1", "a:decision", None, "request_id"),
        ("s1", "", None, "request_id"),
        ("s1", "r*", None, "request_id"),
        ("*", "r1", None, "session_id"),
        ("s1", "r1", "not-a-run", "run_id"),
    ],
)
def test_bad_ids_are_refused_naming_the_field(
    session_id: str, request_id: str, run_id: str | None, field: str
) -> None:
    with pytest.raises(InvalidJobError, match=f"^{field}:") as info:
        prepare_answer(
            session_id,
            request_id,
            run_id,
            allow=True,
            message=None,
            updated_input=None,
            decided_by=None,
        )
    assert isinstance(info.value, ValueError)


def test_results_and_their_one_line_texts() -> None:
    delivered = AnswerResult(AnswerOutcome.DELIVERED, "s1", RUN_ID, "r1")
    assert delivered.delivered
    assert delivered.as_dict() == {
        "outcome": "delivered",
        "session_id": "s1",
        "run_id": RUN_ID,
        "request_id": "r1",
    }
    assert outcome_text(delivered, allow=True) == "allowed request r1 (session s1)"
    assert outcome_text(delivered, allow=False) == "denied request r1 (session s1)"
    late = AnswerResult(AnswerOutcome.ALREADY_DECIDED, "s1", RUN_ID, "r1")
    assert not late.delivered
    assert "request r1 was already decided" in outcome_text(late, allow=True)
    unknown = AnswerResult(AnswerOutcome.UNKNOWN_REQUEST, "s1", RUN_ID, "r9")
    assert "no request r9" in outcome_text(unknown, allow=True)
    ended = AnswerResult(AnswerOutcome.RUN_NOT_RUNNING, "s1", None, "r1")
    assert ended.as_dict()["run_id"] is None
    assert "no running run" in outcome_text(ended, allow=True)


def test_previews_and_expiries() -> None:
    assert input_preview({"a": 1}) == '{"a": 1}'
    long = input_preview({"a": "x" * 500}, limit=50)
    assert len(long) == 50 and long.endswith("…")
    assert expires_in_s(NOW + 10.9, NOW) == 10
    assert expires_in_s(NOW - 5, NOW) == 0


@pytest.mark.parametrize("grace", [-0.1, MAX_GRACE_S + 1, float("nan"), float("inf")])
def test_grace_out_of_range_is_a_usage_error(grace: float) -> None:
    with pytest.raises(InvalidJobError, match="grace_s"):
        require_grace(grace)


def test_a_cancel_waits_for_the_grace_on_top_of_its_timeout() -> None:
    require_grace(0.0)
    require_grace(MAX_GRACE_S)
    assert wait_limit_s(5.0, None, 10.0) == 15.0
    assert wait_limit_s(5.0, 2.0, 10.0) == 7.0
    assert wait_limit_s(0.0, None, 10.0) == 10.0
