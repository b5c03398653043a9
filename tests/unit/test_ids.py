"""Unit tests for shared.ids and the places that turn ids into paths and key patterns."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.ids import (
    escape_redis_glob,
    is_absolute_cwd,
    is_claude_session_id,
    is_run_id,
    is_session_id,
)
from shared.jobs import SESSION_ID_PATTERN, new_run_id
from shared.keys import Keys
from worker import transcripts

GLOB_SPECIAL = "*?[]\\"
# Characters that must never survive in a session id: glob, path, hash tag, key separator.
FORBIDDEN_IN_SESSION_ID = GLOB_SPECIAL + "/{}: \n\x00"


def canonical_uuid(text: str) -> bool:
    """Oracle: the standard library's reading of a canonical UUID string."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def mutations(text: str) -> st.SearchStrategy[str]:
    """Near misses of a valid id: case, padding, traversal, globs, truncation."""
    return st.sampled_from(
        [
            text.upper(),
            text + "\n",
            " " + text,
            text[:-1],
            text + "0",
            "../" + text,
            text.replace("-", ""),
            "{" + text + "}",
            "urn:uuid:" + text,
            text[:8] + "*",
            text[:-1] + "?",
            "*",
        ]
    )


def literal_tokens(pattern: str) -> list[str]:
    """Read a Redis glob as literals; fail on any unescaped metacharacter."""
    tokens, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            assert index + 1 < len(pattern), f"dangling backslash in {pattern!r}"
            tokens.append(pattern[index + 1])
            index += 2
            continue
        assert char not in GLOB_SPECIAL, f"unescaped {char!r} in {pattern!r}"
        tokens.append(char)
        index += 1
    return tokens


# --------------------------------------------------------------------------- claude_session_id


@given(st.uuids())
def test_every_uuid_in_canonical_form_is_a_claude_session_id(value: uuid.UUID) -> None:
    assert is_claude_session_id(str(value))


@given(st.uuids().flatmap(lambda u: mutations(str(u))))
def test_near_misses_of_a_uuid_are_refused(text: str) -> None:
    assert is_claude_session_id(text) is canonical_uuid(text)
    assert not is_claude_session_id(text)


@settings(max_examples=500)
@given(st.text())
def test_claude_session_id_agrees_with_the_uuid_module(text: str) -> None:
    assert is_claude_session_id(text) is canonical_uuid(text)


def test_captured_and_non_string_ids() -> None:
    assert is_claude_session_id("00000000-0000-0000-0000-000000c0ffee")  # a fixture's id
    for value in (None, b"00000000-0000-0000-0000-000000c0ffee", 3, ["*"]):
        assert not is_claude_session_id(value)


# --------------------------------------------------------------------------- session and run ids


@given(st.from_regex(SESSION_ID_PATTERN, fullmatch=True))
def test_ids_submit_accepts_are_session_ids(session_id: str) -> None:
    assert is_session_id(session_id)
    assert not set(session_id) & set(FORBIDDEN_IN_SESSION_ID)


@given(
    st.text(max_size=20),
    st.sampled_from(list(FORBIDDEN_IN_SESSION_ID)),
    st.text(max_size=20),
)
def test_ids_with_a_forbidden_character_are_refused(head: str, bad: str, tail: str) -> None:
    assert not is_session_id(head + bad + tail)


def test_session_id_edges() -> None:
    for bad in ("", "*", "?", "[", "\\", "a*", "[ab]", "-a", ".hidden", "s1\n", "a" * 129):
        assert not is_session_id(bad), bad
    for good in ("s1", "s10", "a", "ticket-42", "A.b_c-d", "a" * 128):
        assert is_session_id(good), good


@given(st.uuids())
def test_run_ids(value: uuid.UUID) -> None:
    assert is_run_id(value.hex)
    assert is_run_id(new_run_id())
    assert not is_run_id(str(value))
    assert not is_run_id(value.hex.upper()) or value.hex == value.hex.upper()
    assert not is_run_id(value.hex + "\n")


# --------------------------------------------------------------------------- cwd


@given(st.text())
def test_absolute_cwd(text: str) -> None:
    expected = text.startswith("/") and "\x00" not in text
    assert is_absolute_cwd(text) is expected


# --------------------------------------------------------------------------- glob escaping


@given(st.text())
def test_escaped_glob_is_a_literal_of_its_text(text: str) -> None:
    assert "".join(literal_tokens(escape_redis_glob(text))) == text


@given(st.text(alphabet=st.sampled_from([*GLOB_SPECIAL, "a", "1", "-", "{", "}"])))
def test_session_pattern_only_wildcard_is_the_trailing_star(session_id: str) -> None:
    keys = Keys("cq")
    pattern = keys.session_pattern(session_id)
    assert pattern.endswith("*")
    assert "".join(literal_tokens(pattern[:-1])) == keys.session_key_prefix(session_id)
    assert keys.log(session_id).startswith(keys.session_key_prefix(session_id))


# --------------------------------------------------------------------------- transcript paths


@settings(max_examples=200)
@given(st.uuids(), st.text(min_size=1).map(lambda t: "/" + t))
def test_transcript_path_stays_in_the_project_folder(value: uuid.UUID, cwd: str) -> None:
    env = {"HOME": "/nonexistent-home"}
    path = transcripts.transcript_path(env, cwd, str(value))
    projects = Path("/nonexistent-home/.claude/projects")
    assert path.parent.parent == projects
    assert path.name == f"{value}.jsonl"
    assert path.resolve().is_relative_to(projects.resolve())


@given(st.one_of(st.text(), st.uuids().flatmap(lambda u: mutations(str(u)))))
def test_transcript_path_refuses_anything_but_a_uuid(text: str) -> None:
    if canonical_uuid(text):
        return
    with pytest.raises(transcripts.CorruptStateError, match="not a UUID"):
        transcripts.transcript_path({"HOME": "/nonexistent-home"}, "/srv/repo", text)


def test_transcript_path_refuses_a_symlinked_project_folder_leading_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    projects = tmp_path / "home" / ".claude" / "projects"
    projects.mkdir(parents=True)
    (projects / "-srv-repo").symlink_to(outside, target_is_directory=True)
    conversation = str(uuid.uuid4())
    with pytest.raises(transcripts.CorruptStateError, match="outside"):
        transcripts.transcript_path({"HOME": str(tmp_path / "home")}, "/srv/repo", conversation)


def test_find_local_ignores_copies_that_lead_out(tmp_path: Path) -> None:
    conversation = str(uuid.uuid4())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{conversation}.jsonl").write_text("{}\n")
    projects = tmp_path / "home" / ".claude" / "projects"
    (projects / "-elsewhere").mkdir(parents=True)
    # A file inside the projects folder that is a symlink to a file outside it.
    (projects / "-elsewhere" / f"{conversation}.jsonl").symlink_to(
        outside / f"{conversation}.jsonl"
    )
    env = {"HOME": str(tmp_path / "home")}
    assert transcripts.find_local(env, "/srv/repo", conversation) is None
    real = projects / "-srv-repo" / f"{conversation}.jsonl"
    real.parent.mkdir()
    real.write_text("{}\n")
    assert transcripts.find_local(env, "/srv/repo", conversation) == real


def test_no_regex_anchor_leaks() -> None:
    # `$` alone would accept a trailing newline; the validators use fullmatch.
    assert re.match(SESSION_ID_PATTERN, "s1\n")
    assert not is_session_id("s1\n")
