"""Runs of a session: submit, cancel, answer permission requests."""

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import TypeAdapter, ValidationError

from gateway.auth import Principal
from gateway.errors import fields_of_errors, invalid
from gateway.models import (
    AnswerOut,
    CancelOut,
    CancelRequest,
    PermissionAnswer,
    RunAccepted,
    RunCreate,
)
from gateway.state import Gateway, checked_session_id, error_responses
from gateway.tokens import Scope
from shared.ids import REQUEST_ID_PATTERN
from shared.jobs import OnBusy, PromptJob

_ON_BUSY: TypeAdapter[OnBusy] = TypeAdapter(OnBusy)
SessionId = Annotated[str, Depends(checked_session_id)]
RequestId = Annotated[
    str,
    Path(
        description="The request_id of a permission_request event.",
        json_schema_extra={"pattern": REQUEST_ID_PATTERN},
    ),
]


def job_of(session_id: str, body: RunCreate) -> tuple[PromptJob, OnBusy]:
    """The PromptJob and on_busy of a run request; a 422 names every bad field at once,
    with PromptJob's own messages."""
    fields = body.given
    problems: dict[str, str] = {}
    on_busy: OnBusy = "enqueue"
    if "on_busy" in fields:
        try:
            on_busy = _ON_BUSY.validate_python(fields.pop("on_busy"), strict=True)
        except ValidationError as exc:
            problems["on_busy"] = exc.errors()[0]["msg"]
    if "session_id" in fields:
        del fields["session_id"]
        problems["session_id"] = "not a body field: the path names the session"
    try:
        # JSON's own strictness (the body was JSON): an ISO 8601 string is a run_at, an
        # array a retry_on; a number is still not a string, nor a string a number.
        job = PromptJob.model_validate_json(
            json.dumps({**fields, "session_id": session_id}), strict=True
        )
    except ValidationError as exc:
        problems.update(fields_of_errors(exc.errors()))
    if problems:
        summary = "; ".join(f"{name}: {message}" for name, message in problems.items())
        raise invalid(f"invalid job: {summary}", problems)
    return job, on_busy


def runs_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["runs"])
    client = gateway.client

    @router.post(
        "/runs",
        status_code=202,
        summary="Submit a prompt to the session",
        responses=error_responses(400, 401, 403, 409, 422, 503),
    )
    async def submit_run(
        principal: Annotated[Principal, Depends(gateway.auth.require_scope(Scope.SUBMIT))],
        session_id: SessionId,
        body: RunCreate,
    ) -> RunAccepted:
        """Queue a run; 202 with its run id and the seq of its `queued` event.

        `on_busy`: `enqueue` (wait behind the session's pending runs), `reject` (409 if
        one is pending, nothing queued) or `interrupt` (cancel them first).
        """
        del principal
        job, on_busy = job_of(session_id, body)
        handle = await client.submit(job, on_busy=on_busy)
        return RunAccepted(session_id=session_id, run_id=handle.run_id, seq=handle.queued_seq)

    @router.post(
        "/cancel",
        summary="Cancel the session's current run (or a given one)",
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def cancel_run(
        principal: Annotated[Principal, Depends(gateway.auth.require_scope(Scope.CANCEL))],
        session_id: SessionId,
        body: CancelRequest | None = None,
    ) -> CancelOut:
        """The outcome: cancelled_running, cancelled_queued, already_finished,
        nothing_to_cancel, or (with `wait`) owner_unreachable."""
        request = body or CancelRequest()
        result = await client.cancel(
            session_id,
            run_id=request.run_id,
            wait=request.wait,
            timeout_s=request.timeout_s,
            grace_s=request.grace_s,
            reason=f"cancelled through the HTTP gateway ({principal.decided_by})",
        )
        return CancelOut(outcome=result.outcome, session_id=result.session_id, run_id=result.run_id)

    @router.post(
        "/permissions/{request_id}",
        summary="Answer a permission request",
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def answer_permission(
        principal: Annotated[Principal, Depends(gateway.auth.require_scope(Scope.APPROVE))],
        session_id: SessionId,
        request_id: RequestId,
        body: PermissionAnswer,
    ) -> AnswerOut:
        """The outcome: delivered, already_decided, unknown_request or run_not_running.

        The decision records who answered (`decided_by`): `api-key`, `token:<token id>`,
        or `unauthenticated` on a gateway without API keys.
        """
        result = await client.respond(
            session_id,
            request_id,
            allow=body.allow,
            message=body.message,
            updated_input=body.updated_input,
            decided_by=principal.decided_by,
            run_id=body.run_id,
        )
        return AnswerOut(
            outcome=result.outcome,
            session_id=result.session_id,
            run_id=result.run_id,
            request_id=result.request_id,
            decided_by=principal.decided_by,
        )

    return router
