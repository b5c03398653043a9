"""How a writer puts an event on the wire: the envelope's JSON without its leading
`{"seq":N,`, which the append script adds once Redis has assigned the seq
(shared/runstore/scripts.py). Readers decode envelopes in shared/events.py."""

from __future__ import annotations

import json

from shared.events import Event


def envelope_header(session_id: str, run_id: str) -> str:
    """The part of every envelope of a run that never changes (see encode_body)."""
    return f'"session_id":{json.dumps(session_id)},"run_id":{json.dumps(run_id)},'


def encode_body(session_id: str, run_id: str, ts: float, event: Event) -> str:
    """The envelope JSON minus its leading `{"seq":N,` part, which Redis adds.

    The publish script assigns seq atomically and splices it in front of this text.
    """
    return encode_with_header(envelope_header(session_id, run_id), ts, event)


def encode_with_header(header: str, ts: float, event: Event) -> str:
    """encode_body with the run's header computed once (the publisher's hot path)."""
    data_json = event.data.model_dump_json(exclude_none=False)
    return f'{header}"ts":{ts!r},"type":"{event.type.value}","data":{data_json}}}'
