"""worker.transcripts.find_local: which local copy of a conversation the worker saves.

The CLI appends to the copy in the folder where the conversation began, so the newest
non-empty `<projects>/*/<id>.jsonl` wins; a copy reached through a symlink out of the
projects folder never does.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from worker.transcripts import LocalCopy, find_local, find_written

CONVERSATION = str(uuid.UUID(int=7))


def _copy(projects: Path, folder: str, body: bytes, mtime_s: int) -> Path:
    path = projects / folder / f"{CONVERSATION}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    os.utime(path, (mtime_s, mtime_s))
    return path


def _setup(tmp_path: Path) -> tuple[dict[str, str], Path]:
    config = tmp_path / "config"
    projects = config / "projects"
    projects.mkdir(parents=True)
    return {"CLAUDE_CONFIG_DIR": str(config)}, projects


def test_the_newest_copy_in_any_project_folder_wins(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    _copy(projects, "-work-a", b"{}\n", 1_000)
    newest = _copy(projects, "-work-b", b"{}\n{}\n", 2_000)
    _copy(projects, "-work-c", b"{}\n", 1_500)
    assert find_local(env, "/work/a", CONVERSATION) == newest


def test_empty_copies_and_stray_files_are_no_copies(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    kept = _copy(projects, "-work-a", b"{}\n", 1_000)
    _copy(projects, "-work-b", b"", 3_000)  # newest, but empty
    (projects / "not-a-folder").write_bytes(b"x")
    (projects / "-work-c" / f"{CONVERSATION}.jsonl").mkdir(parents=True)  # a folder
    assert find_local(env, "/work/a", CONVERSATION) == kept


def test_a_copy_through_a_symlink_out_of_the_projects_folder_is_skipped(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    kept = _copy(projects, "-work-a", b"{}\n", 1_000)
    outside = tmp_path / "elsewhere"
    _copy(outside, "-evil", b"{}\n", 5_000)
    (projects / "-evil").symlink_to(outside / "-evil")
    assert find_local(env, "/work/a", CONVERSATION) == kept


def test_no_copy_or_no_projects_folder_is_none(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    (projects / "-work-a").mkdir()
    assert find_local(env, "/work/a", CONVERSATION) is None
    assert find_local({"CLAUDE_CONFIG_DIR": str(tmp_path / "none")}, "/w", CONVERSATION) is None


# ---------------------------------------- find_written: what a run wrote, without a scan


def _grow(path: Path, mtime_s: int) -> None:
    with path.open("ab") as handle:
        handle.write(b"{}\n")
    os.utime(path, (mtime_s, mtime_s))


def test_a_new_conversation_is_the_copy_in_the_cwd_folder(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    written = _copy(projects, "-work-a", b"{}\n", 1_000)
    assert find_written(env, "/work/a", CONVERSATION, None) == written


def test_a_new_conversation_written_elsewhere_is_left_to_the_scan(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    elsewhere = _copy(projects, "-work-b", b"{}\n", 1_000)  # e.g. another slug rule
    assert find_written(env, "/work/a", CONVERSATION, None) is None
    assert find_local(env, "/work/a", CONVERSATION) == elsewhere


def test_the_resumed_copy_counts_only_if_the_run_appended_to_it(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    began = _copy(projects, "-work-a", b"{}\n", 1_000)  # where the conversation began
    resumed = LocalCopy(began, began.stat().st_size)
    # Run in /work/b, resumed from /work/a's copy, which the CLI appends to.
    assert find_written(env, "/work/b", CONVERSATION, resumed) is None  # not written yet
    _grow(began, 2_000)
    assert find_written(env, "/work/b", CONVERSATION, resumed) == began


def test_a_copy_written_in_the_cwd_folder_after_the_resumed_one_wins(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    began = _copy(projects, "-work-a", b"{}\n", 1_000)
    resumed = LocalCopy(began, began.stat().st_size)
    written = _copy(projects, "-work-b", b"{}\n{}\n", 2_000)
    assert find_written(env, "/work/b", CONVERSATION, resumed) == written


def test_an_unchanged_resumed_copy_leaves_a_copy_elsewhere_to_the_scan(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    began = _copy(projects, "-work-a", b"{}\n", 1_000)
    resumed = LocalCopy(began, began.stat().st_size)
    elsewhere = _copy(projects, "-work-c", b"{}\n{}\n", 2_000)  # neither candidate
    assert find_written(env, "/work/a", CONVERSATION, resumed) is None
    assert find_local(env, "/work/a", CONVERSATION) == elsewhere


def test_find_written_never_takes_a_copy_through_a_symlink_out(tmp_path: Path) -> None:
    env, projects = _setup(tmp_path)
    outside = tmp_path / "elsewhere"
    target = _copy(outside, "-work-b", b"{}\n", 1_000)
    (projects / "-work-b").symlink_to(outside / "-work-b")
    resumed = LocalCopy(projects / "-work-b" / target.name, 1)  # it "grew" from 1 byte
    _grow(target, 2_000)
    assert find_written(env, "/work/a", CONVERSATION, resumed) is None
