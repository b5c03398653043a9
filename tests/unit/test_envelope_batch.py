"""envelopes_from_json: a page of log entries validated in one call, never mixed up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import Envelope, envelopes_from_json


def _raw(seq: int, text: str = "hi", run_id: str = "run-1") -> bytes:
    envelope = Envelope(
        seq=seq, session_id="s1", run_id=run_id, ts=1.5, type="text", data={"text": text}
    )
    return envelope.model_dump_json().encode()


@given(st.lists(st.text(max_size=40), max_size=30))
def test_a_batch_is_what_each_entry_alone_decodes_to(texts: list[str]) -> None:
    raws = [_raw(seq, text) for seq, text in enumerate(texts, start=1)]
    batch = envelopes_from_json(raws, list(range(1, len(raws) + 1)))
    assert batch == [Envelope.from_json(raw) for raw in raws]
    assert [envelope.to_json().encode() for envelope in batch] == raws


def test_str_entries_and_an_empty_page() -> None:
    raws = [_raw(1).decode(), _raw(2).decode()]
    batch = envelopes_from_json(raws, [1, 2])
    assert [envelope.seq for envelope in batch] == [1, 2]
    assert batch[1].to_json() == raws[1]
    assert envelopes_from_json([], []) == []


def test_an_entry_smuggling_a_second_envelope_is_not_split_across_entries() -> None:
    # Joined, these two entries are three valid envelopes; each alone, the first is invalid.
    smuggler = _raw(1) + b"," + _raw(2, "smuggled")
    with pytest.raises(ValidationError):
        envelopes_from_json([smuggler, _raw(3)], [1, 3])
    # Joined, these two entries are one valid envelope (with an extra field `y`).
    unclosed = _raw(1)[:-1]
    with pytest.raises(ValidationError):
        envelopes_from_json([unclosed, b'"y":1}'], [1, 2])


def test_seqs_that_disagree_with_the_entries_fall_back_to_one_by_one() -> None:
    raws = [_raw(5), _raw(6)]
    batch = envelopes_from_json(raws, [1, 2])  # what each entry holds is what counts
    assert [envelope.seq for envelope in batch] == [5, 6]
    assert [envelope.to_json().encode() for envelope in batch] == raws


def test_an_invalid_entry_raises_as_from_json_does() -> None:
    with pytest.raises(ValidationError):
        envelopes_from_json([_raw(1), b'{"seq": 0}'], [1, 2])
    with pytest.raises(ValueError, match="2 entries but 1 seqs"):
        envelopes_from_json([_raw(1), _raw(2)], [1])
