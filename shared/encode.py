"""How a writer puts an event on the wire: the envelope's JSON without its leading
`{"seq":N,`, which the append script adds once Redis has assigned the seq
(shared/runstore/scripts.py). Readers decode envelopes in shared/events.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
from pydantic import BaseModel

from shared.blocks import BLOCK_MODELS
from shared.events import Event, EventData, EventType, MessageData, StreamEventData

# The data msgspec may write: the parser's (worker/parser.py is their only writer), whose
# free-form parts (`Any`) only ever hold what a JSON decoder made. msgspec would write
# some other Python types differently from pydantic (bytes as base64), so no other
# data goes this way. Their models, and the blocks inside, have no aliases, custom
# serializers or excluded fields: their JSON is their fields in order, then their
# extras (tests/unit/test_encode.py holds the result to pydantic's).
_FAST_DATA = frozenset({MessageData, StreamEventData})
_SURELY_SHALLOW = 200  # containers; pydantic's serializer refuses past ~254 levels
_PLAIN_MODELS: tuple[type[BaseModel], ...] = (MessageData, StreamEventData, *BLOCK_MODELS)


def envelope_header(session_id: str, run_id: str) -> str:
    """The part of every envelope of a run that never changes (see encode_body)."""
    return f'"session_id":{json.dumps(session_id)},"run_id":{json.dumps(run_id)},'


def encode_body(session_id: str, run_id: str, ts: float, event: Event) -> str:
    """The envelope JSON minus its leading `{"seq":N,` part, which Redis adds.

    The publish script assigns seq atomically and splices it in front of this text.
    """
    return encode_with_header(envelope_header(session_id, run_id), ts, event).decode()


def seq_prefix(seq: int) -> bytes:
    """What the append script puts in front of a body: `{"seq":N,`. A writer that knows
    the seq a body will get may put it there itself (shared/runstore/scripts.py)."""
    return b'{"seq":%d,' % seq


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A stream event whose `data` is JSON already: what `StreamEventData` would encode
    to, made by the worker's parser from the CLI's line without decoding its `event`
    (worker/parser.py, `stream_event_as_printed`). Only the publisher takes one."""

    data_json: bytes
    type: EventType = EventType.STREAM_EVENT

    def decoded(self) -> Event:
        """The same event as a model (for the rare paths that edit one: truncation)."""
        data = StreamEventData.model_validate_json(self.data_json)
        return Event(type=self.type, data=data)


def encode_with_header(header: str, ts: float, event: Event | EncodedEvent) -> bytes:
    """encode_body, as UTF-8, with the run's header computed once (the publisher's hot
    path: its bytes go to Redis as they are, with no str made of them, measured or
    encoded again on the way)."""
    head = f'{header}"ts":{ts!r},"type":"{event.type.value}","data":'
    data = event.data_json if isinstance(event, EncodedEvent) else data_json(event.data)
    return b"".join((head.encode(), data, b"}"))


def data_json(data: EventData) -> bytes:
    """`data.model_dump_json()` as UTF-8: the same JSON, at a third of the cost for the
    parser's events (messages and stream events, nearly every event of a run).

    msgspec's encoder writes those from their fields (~3 us for a 2.3 KB message against
    ~11 us in pydantic's serializer, a fifth of a work horse's time per event). What it
    will not write (an int past 64 bits, a lone surrogate), and anything that might nest
    deeper than pydantic writes, goes to pydantic, which writes it, or raises, as it
    always did.
    """
    if type(data) in _FAST_DATA:
        try:
            encoded = _fast_encode(data)
        except Exception:  # pydantic decides, and words any error
            return _pydantic_json(data)
        # msgspec nests as deep as Python recurses, pydantic's serializer ~254 levels:
        # what pydantic would refuse must stay refused (readers dump envelopes with
        # pydantic too). Nesting is at most the count of `[` and `{`, strings included,
        # so a text full of braces takes pydantic's way, at pydantic's cost.
        if surely_shallow(encoded):
            return encoded
    return _pydantic_json(data)


def surely_shallow(encoded: bytes) -> bool:
    """Does this JSON nest no deeper than pydantic's serializer writes? (Nesting is at
    most the count of `[` and `{`, strings included: a false no, never a false yes.)"""
    return encoded.count(b"[") + encoded.count(b"{") <= _SURELY_SHALLOW


def _pydantic_json(data: EventData) -> bytes:
    # model_dump_json's bytes before it makes a str of them.
    return data.__pydantic_serializer__.to_json(data, exclude_none=False)


def _fields(value: Any) -> Any:
    if isinstance(value, _PLAIN_MODELS):
        extra = value.__pydantic_extra__
        return {**value.__dict__, **extra} if extra else value.__dict__
    raise TypeError(f"{type(value).__name__} is left to pydantic")


_fast_encode = msgspec.json.Encoder(enc_hook=_fields).encode
