"""The CLI's stdin control protocol and the permission-request state machine. Pure."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.events import DecisionReason, EventType, PermissionDecisionData
from shared.runstore import Decision
from worker import cliproto
from worker.approvals import DENIED_BY_PERSON, RUN_ENDED, Approvals, timed_out
from worker.parser import parse_line

ASK_LINE: dict[str, Any] = {
    "type": "control_request",
    "request_id": "810b8784-1b61-4894-9fce-291d1463ce0d",
    "request": {
        "subtype": "can_use_tool",
        "tool_name": "Bash",
        "display_name": "Bash",
        "input": {"command": "touch /tmp/x/made", "description": "Run a command"},
        "description": "Run a command",
        "permission_suggestions": [{"type": "addRules", "behavior": "allow"}],
        "blocked_path": "/tmp/x/made",
        "tool_use_id": "toolu_1fea57be628f47c38963915f",
    },
}


def one_line(data: bytes) -> dict[str, Any]:
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    decoded = json.loads(data)
    assert isinstance(decoded, dict)
    return decoded


def test_the_prompt_is_one_user_message_line() -> None:
    line = one_line(cliproto.user_message('multi\nline "quoted" ✓'))
    assert line == {
        "type": "user",
        "message": {"role": "user", "content": 'multi\nline "quoted" ✓'},
        "parent_tool_use_id": None,
        "session_id": "default",
    }


@given(st.text(max_size=300))
def test_any_prompt_frames_as_exactly_one_line(text: str) -> None:
    assert one_line(cliproto.user_message(text))["message"]["content"] == text


def test_allow_deny_and_interrupt_have_the_clis_shapes() -> None:
    assert one_line(cliproto.allow("r1", {"command": "ls"})) == {
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": "r1",
            "response": {"behavior": "allow", "updatedInput": {"command": "ls"}},
        },
    }
    denied = one_line(cliproto.deny("r1", "not today"))
    assert denied["response"]["response"] == {"behavior": "deny", "message": "not today"}
    assert one_line(cliproto.interrupt("i1")) == {
        "type": "control_request",
        "request_id": "i1",
        "request": {"subtype": "interrupt"},
    }
    refused = one_line(cliproto.unsupported("r2", "hook_callback"))["response"]
    assert refused["subtype"] == "error" and refused["request_id"] == "r2"


def test_a_can_use_tool_line_parses_into_a_typed_request_not_an_event() -> None:
    parsed = parse_line(json.dumps(ASK_LINE).encode())
    assert parsed.events == []
    assert parsed.control == cliproto.ToolPermissionAsk(
        request_id="810b8784-1b61-4894-9fce-291d1463ce0d",
        tool_name="Bash",
        input={"command": "touch /tmp/x/made", "description": "Run a command"},
        tool_use_id="toolu_1fea57be628f47c38963915f",
        description="Run a command",
        suggestions=[{"type": "addRules", "behavior": "allow"}],
    )


def test_control_requests_we_cannot_key_or_do_not_handle_are_told_apart() -> None:
    def control(line: dict[str, Any]) -> cliproto.ControlRequest | None:
        return parse_line(json.dumps(line).encode()).control

    bad_id = {**ASK_LINE, "request_id": "a:decision"}
    assert control(bad_id) == cliproto.OtherControlRequest(
        "a:decision", "can_use_tool", problem="its request id is not valid"
    )
    hook = {"type": "control_request", "request_id": "h1", "request": {"subtype": "hook"}}
    assert control(hook) == cliproto.OtherControlRequest("h1", "hook")
    no_tool = {**ASK_LINE, "request": {"subtype": "can_use_tool", "input": "x"}}
    assert control(no_tool) == cliproto.OtherControlRequest(
        ASK_LINE["request_id"], "can_use_tool", problem="it names no tool"
    )
    assert control({"type": "control_request"}) is None
    ack = {"type": "control_response", "response": {"subtype": "success", "request_id": "i"}}
    assert parse_line(json.dumps(ack).encode()).events == []


@given(st.dictionaries(st.text(max_size=20), st.from_type(object).map(repr), max_size=6))
def test_any_control_request_payload_parses_without_raising(request: dict[str, Any]) -> None:
    line = {"type": "control_request", "request_id": "r1", "request": request}
    parsed = parse_line(json.dumps(line).encode())
    assert parsed.events == [] and parsed.control is not None


def _ask(request_id: str = "r1") -> cliproto.ToolPermissionAsk:
    return cliproto.ToolPermissionAsk(request_id=request_id, tool_name="Bash", input={"a": 1})


def _decision_of(resolved: Any) -> PermissionDecisionData:
    assert resolved.event.type is EventType.PERMISSION_DECISION
    data = resolved.event.data
    assert isinstance(data, PermissionDecisionData)
    return data


def test_a_request_is_pending_until_decided_once() -> None:
    approvals = Approvals(timeout_s=30)
    data = approvals.ask(_ask(), now=1000.0, monotonic=5.0)
    assert data is not None and data.expires_at == 1030.0 and data.input == {"a": 1}
    assert approvals.ask(_ask(), now=1001.0, monotonic=6.0) is None  # the same id again
    assert approvals and approvals.pending_ids() == ["r1"] and approvals.next_due() == 35.0
    resolved = approvals.resolve("r1", Decision(behavior="allow", decided_by="ann"))
    assert resolved is not None
    # No changed input: the CLI gets the input it asked about.
    assert one_line(resolved.stdin)["response"]["response"]["updatedInput"] == {"a": 1}
    decision = _decision_of(resolved)
    assert (decision.behavior, decision.decided_by) == ("allow", "ann")
    assert decision.reason is DecisionReason.ANSWERED
    assert approvals.resolve("r1", Decision(behavior="deny")) is None
    assert not approvals and approvals.next_due() is None


def test_a_changed_input_and_a_bare_deny_reach_the_cli() -> None:
    approvals = Approvals(timeout_s=30)
    approvals.ask(_ask("r1"), now=0.0, monotonic=0.0)
    approvals.ask(_ask("r2"), now=0.0, monotonic=0.0)
    changed = approvals.resolve("r1", Decision(behavior="allow", updated_input={"a": 2}))
    assert changed is not None
    assert one_line(changed.stdin)["response"]["response"]["updatedInput"] == {"a": 2}
    denied = approvals.resolve("r2", Decision(behavior="deny"))
    assert denied is not None
    assert one_line(denied.stdin)["response"]["response"]["message"] == DENIED_BY_PERSON
    assert _decision_of(denied).message == DENIED_BY_PERSON


def test_deadlines_expire_in_order_and_the_reasons_say_why() -> None:
    approvals = Approvals(timeout_s=10)
    approvals.ask(_ask("early"), now=0.0, monotonic=0.0)
    approvals.ask(_ask("late"), now=5.0, monotonic=5.0)
    assert approvals.expired(9.9) == []
    assert approvals.expired(10.0) == ["early"]
    timeout = approvals.resolve("early", timed_out(10))
    assert timeout is not None
    assert _decision_of(timeout).reason is DecisionReason.TIMED_OUT
    assert "10 s" in (_decision_of(timeout).message or "")
    ended = approvals.resolve("late", RUN_ENDED)
    assert ended is not None
    assert (_decision_of(ended).behavior, _decision_of(ended).reason) == (
        "deny",
        DecisionReason.RUN_ENDED,
    )


def test_a_huge_tool_input_is_cut_in_the_event_but_reaches_the_cli_whole() -> None:
    approvals = Approvals(timeout_s=30, max_request_bytes=4096)
    content = "x" * 100_000
    ask = cliproto.ToolPermissionAsk(
        request_id="w1", tool_name="Write", input={"file_path": "/a", "content": content}
    )
    data = approvals.ask(ask, now=0.0, monotonic=0.0)
    assert data is not None
    assert len(data.model_dump_json()) <= 4096
    assert data.input["file_path"] == "/a" and "truncated" in data.input["content"]
    resolved = approvals.resolve("w1", Decision(behavior="allow"))
    assert resolved is not None
    assert one_line(resolved.stdin)["response"]["response"]["updatedInput"]["content"] == content
