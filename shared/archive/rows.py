"""What the archive holds and is asked, as types, and how each is read. Pure.

- OutboxEntry: one run to archive, read (and validated) from the Redis outbox.
- RunRow: the row of one finished run, derived from its events.
- SessionFilter / SessionSummary / SessionPage / TotalsRow: search and totals.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events import Envelope, EventType
from shared.ids import is_run_id, is_session_id

PROMPT_PREVIEW_CHARS = 200
MAX_META_FILTERS = 16
MAX_PAGE = 1000
_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# The events a run row is built from.
ROW_EVENT_TYPES = (
    EventType.QUEUED.value,
    EventType.STARTED.value,
    EventType.INIT.value,
    EventType.RESULT.value,
    EventType.FINISHED.value,
)


class OutboxError(ValueError):
    """An outbox entry that is not one this code wrote (it is acknowledged and skipped)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    entry_id: str
    session_id: str
    run_id: str
    seq: int  # the seq of the run's `finished` event

    @classmethod
    def parse(cls, entry_id: object, fields: Mapping[Any, Any]) -> OutboxEntry:
        """Validate one XREADGROUP entry (bytes or str); OutboxError if it is not ours."""
        text = {_text(k): _text(v) for k, v in fields.items()}
        session_id, run_id, seq = text.get("session_id"), text.get("run_id"), text.get("seq")
        if not is_session_id(session_id) or not is_run_id(run_id):
            raise OutboxError(f"outbox entry {_text(entry_id)!r}: bad session or run id")
        if seq is None or not seq.isdigit() or int(seq) < 1:
            raise OutboxError(f"outbox entry {_text(entry_id)!r}: bad seq")
        assert session_id is not None and run_id is not None
        return cls(_text(entry_id), session_id, run_id, int(seq))


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    session_id: str
    status: str
    finished_at: float
    finished_seq: int
    submitted_at: float | None = None
    started_at: float | None = None
    duration_s: float | None = None
    model: str | None = None
    profile: str | None = None
    worker: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    num_turns: int | None = None
    metadata: dict[str, Any] | None = None
    prompt_preview: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_row(run_id: str, envelopes: Iterable[Envelope]) -> RunRow | None:
    """The run's row from its events (any order, others ignored); None before `finished`."""
    fields: dict[str, Any] = {}
    finished: Envelope | None = None
    for envelope in sorted((e for e in envelopes if e.run_id == run_id), key=lambda e: e.seq):
        data = envelope.data
        match envelope.type:
            case EventType.QUEUED:
                fields["submitted_at"] = envelope.ts
                fields["profile"] = _str(data.get("profile"))
                fields.setdefault("model", _str(data.get("model")))
                meta = data.get("metadata")
                fields["metadata"] = meta if isinstance(meta, dict) else {}
                prompt = _str(data.get("prompt"))
                fields["prompt_preview"] = None if prompt is None else prompt[:PROMPT_PREVIEW_CHARS]
            case EventType.STARTED:
                fields["started_at"] = envelope.ts
                fields["worker"] = _str(data.get("worker"))
            case EventType.INIT if _str(data.get("model")):
                fields["model"] = _str(data.get("model"))
            case EventType.RESULT:
                fields["cost_usd"] = _number(data.get("total_cost_usd"))
                raw_usage = data.get("usage")
                usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
                fields["input_tokens"] = _int(usage.get("input_tokens"))
                fields["output_tokens"] = _int(usage.get("output_tokens"))
                fields["num_turns"] = _int(data.get("num_turns"))
            case EventType.FINISHED:
                finished = envelope
    if finished is None:
        return None
    return RunRow(
        run_id=run_id,
        session_id=finished.session_id,
        status=_str(finished.data.get("status")) or "unknown",
        finished_at=finished.ts,
        finished_seq=finished.seq,
        duration_s=_number(finished.data.get("duration_s")),
        **fields,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_since(text: str, *, now: float | None = None) -> float:
    """`7d`, `12h`, `30m`, `90s`, `2w` before now, as epoch seconds; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 7d, 12h, 30m, 90s or 2w")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    return (time.time() if now is None else now) - seconds


def parse_meta(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` filters as a dict; ValueError for one without `=` or an empty key."""
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not key=value")
        meta[key] = value
    return meta


class SessionFilter(BaseModel):
    """Which archived sessions to list: some run of theirs matches every filter given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: float | None = Field(default=None, description="Finished at or after (epoch s).")
    status: str | None = Field(default=None, max_length=64)
    meta: dict[str, str] = Field(default_factory=dict)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0)

    @field_validator("meta")
    @classmethod
    def _few_filters(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_META_FILTERS:
            raise ValueError(f"at most {MAX_META_FILTERS} metadata filters")
        return value


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    runs: int
    first_submitted_at: float | None
    last_finished_at: float
    last_status: str
    cost_usd: float | None
    models: list[str]
    profiles: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionSummary]
    next_offset: int | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class TotalsRow:
    day: str  # ISO date, UTC
    model: str | None
    profile: str | None
    runs: int
    cost_usd: float
    input_tokens: int
    output_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
