"""Generated requests (schemathesis) against a real gateway: every answer is as documented.

Every route but the event stream (which stays open) gets requests that fit its schema
and requests that do not, sent with the API key; no answer may be a server error, and
each status, content type and body must be one its OpenAPI entry lists.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway.server import API_KEY, Server
from tests.gateway.support import bearer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 25
# Headers that frame the HTTP message itself. Negative generation sometimes sets one
# (a run saw `Content-Length: d;Ki`), and uvicorn's parser answers 400 before the app
# is called: that says nothing about the routes, so such cases go without them.
FRAMING = frozenset({"content-length", "transfer-encoding", "host", "connection"})


def _operations(schema: BaseSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append(result.ok())
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_route_answers_as_documented(gateway: Server, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [
        operation
        for operation in _operations(schema)
        if not operation.path.endswith("/events")
        # Invalid requests need something to get wrong: a parameter or a body.
        and (mode is GenerationMode.POSITIVE or any(operation.iter_parameters()) or operation.body)
    ]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: Case[Any]) -> None:
            for name in [n for n in case.headers or {} if n.lower() in FRAMING]:
                del case.headers[name]
            case.call_and_validate(headers=bearer(API_KEY), checks=CHECKS)

        answers_as_documented()
