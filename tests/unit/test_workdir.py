"""Unit tests for worker.workdir: cwd resolution, CWD_ROOTS confinement, scratch folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from shared.events import ErrorCode
from shared.settings import Settings
from worker import workdir
from worker.workdir import WorkdirRefused, confine, is_within, place, scratch_path


def make_settings(**overrides: Any) -> Settings:
    return Settings(redis_url="redis://localhost:6379/0", **overrides)


def refusal(cwd: str, roots: list[str]) -> ErrorCode:
    with pytest.raises(WorkdirRefused) as caught:
        confine(cwd, roots)
    return caught.value.code


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """<tmp>/root/sub, <tmp>/root-evil, <tmp>/outside."""
    base = tmp_path.resolve()
    for name in ("root/sub", "root-evil", "outside"):
        (base / name).mkdir(parents=True)
    return base


@pytest.mark.parametrize(
    ("path", "root", "inside"),
    [
        ("/srv/repo", "/srv/repo", True),
        ("/srv/repo/a/b", "/srv/repo", True),
        ("/srv/repo-evil", "/srv/repo", False),
        ("/srv/repository", "/srv/repo", False),
        ("/srv", "/srv/repo", False),
        ("/etc", "/", True),
    ],
)
def test_is_within_compares_whole_components(path: str, root: str, inside: bool) -> None:
    assert is_within(path, root) is inside


def test_root_itself_and_below_are_allowed(tree: Path) -> None:
    roots = [str(tree / "root")]
    assert confine(str(tree / "root"), roots) == str(tree / "root")
    assert confine(str(tree / "root" / "sub"), roots) == str(tree / "root" / "sub")


def test_sibling_with_the_root_as_prefix_is_refused(tree: Path) -> None:
    assert refusal(str(tree / "root-evil"), [str(tree / "root")]) is ErrorCode.CWD_NOT_ALLOWED


def test_dotdot_escape_is_refused(tree: Path) -> None:
    sneaky = f"{tree}/root/sub/../../outside"
    assert refusal(sneaky, [str(tree / "root")]) is ErrorCode.CWD_NOT_ALLOWED


def test_dotdot_that_stays_inside_is_allowed_and_normalised(tree: Path) -> None:
    assert confine(f"{tree}/root/sub/..", [str(tree / "root")]) == str(tree / "root")


def test_symlink_inside_the_root_pointing_outside_is_refused(tree: Path) -> None:
    (tree / "root" / "escape").symlink_to(tree / "outside")
    assert refusal(str(tree / "root" / "escape"), [str(tree / "root")]) is ErrorCode.CWD_NOT_ALLOWED


def test_symlink_inside_the_root_resolves_to_its_target(tree: Path) -> None:
    (tree / "root" / "link").symlink_to(tree / "root" / "sub")
    assert confine(str(tree / "root" / "link"), [str(tree / "root")]) == str(tree / "root" / "sub")


def test_roots_are_resolved_too(tree: Path) -> None:
    (tree / "root-link").symlink_to(tree / "root")
    assert confine(str(tree / "root" / "sub"), [str(tree / "root-link")]) == str(
        tree / "root" / "sub"
    )


def test_empty_roots_allow_any_existing_folder(tree: Path) -> None:
    assert confine(str(tree / "outside"), []) == str(tree / "outside")
    assert confine("/etc", []) == os.path.realpath("/etc")


def test_missing_folder_is_not_found_inside_roots_and_not_allowed_outside(tree: Path) -> None:
    roots = [str(tree / "root")]
    assert refusal(str(tree / "root" / "gone"), roots) is ErrorCode.CWD_NOT_FOUND
    # Outside the roots the answer does not depend on what exists there.
    assert refusal(str(tree / "gone"), roots) is ErrorCode.CWD_NOT_ALLOWED
    assert refusal(str(tree / "root" / "gone"), []) is ErrorCode.CWD_NOT_FOUND


def test_a_file_is_not_a_working_directory(tree: Path) -> None:
    (tree / "root" / "file").write_text("x")
    assert refusal(str(tree / "root" / "file"), [str(tree / "root")]) is ErrorCode.CWD_NOT_FOUND


@pytest.mark.parametrize("cwd", ["relative/dir", "", "/srv/\x00repo"])
def test_relative_or_malformed_paths_are_refused(cwd: str) -> None:
    assert refusal(cwd, []) is ErrorCode.CWD_NOT_ALLOWED


def test_default_cwd_is_the_setting_or_the_session_scratch(tmp_path: Path) -> None:
    tempdir = str(tmp_path)
    plain = make_settings()
    assert workdir.default_cwd(plain, "s1", tempdir) == scratch_path(tempdir, plain.scope, "s1")
    assert scratch_path(tempdir, plain.scope, "s1") == os.path.join(
        tempdir, f"claude-queue-{plain.scope}", "sessions", "s1"
    )
    explicit = make_settings(default_cwd="/srv/default")
    assert workdir.default_cwd(explicit, "s1", tempdir) == "/srv/default"


@pytest.mark.parametrize("session_id", ["..", ".", "a/../../etc", ""])
def test_scratch_path_stays_under_its_folder_whatever_the_id(session_id: str) -> None:
    path = scratch_path("/tmp", "scope", session_id)
    assert os.path.dirname(path) == "/tmp/claude-queue-scope/sessions"
    assert os.path.normpath(path) == path


def test_scratch_is_created_private_and_allowed_outside_the_roots(tree: Path) -> None:
    settings_obj = make_settings(cwd_roots=[str(tree / "root")])
    tempdir = str(tree / "tmp")
    os.mkdir(tempdir)
    scratch = workdir.default_cwd(settings_obj, "sess-1", tempdir)
    assert place(scratch, settings_obj, "sess-1", tempdir) == scratch
    level = Path(scratch)
    while str(level) != tempdir:
        info = level.lstat()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700, level
        level = level.parent
    # Another session's scratch is an ordinary folder, confined like any other.
    other = workdir.default_cwd(settings_obj, "sess-2", tempdir)
    with pytest.raises(WorkdirRefused) as caught:
        place(other, settings_obj, "sess-1", tempdir)
    assert caught.value.code is ErrorCode.CWD_NOT_ALLOWED


def test_scratch_level_replaced_by_a_symlink_is_refused(tree: Path) -> None:
    settings_obj = make_settings()
    tempdir = str(tree / "tmp")
    os.mkdir(tempdir)
    # Someone plants the top level as a link to a folder of their choosing.
    os.symlink(tree / "outside", os.path.join(tempdir, f"claude-queue-{settings_obj.scope}"))
    scratch = workdir.default_cwd(settings_obj, "sess-1", tempdir)
    with pytest.raises(WorkdirRefused) as caught:
        place(scratch, settings_obj, "sess-1", tempdir)
    assert caught.value.code is ErrorCode.CWD_NOT_ALLOWED
    assert list((tree / "outside").iterdir()) == []


def test_scratch_session_folder_swapped_for_a_symlink_is_refused(tree: Path) -> None:
    settings_obj = make_settings()
    tempdir = str(tree / "tmp")
    os.mkdir(tempdir)
    scratch = place(workdir.default_cwd(settings_obj, "s", tempdir), settings_obj, "s", tempdir)
    os.rmdir(scratch)
    os.symlink("/etc", scratch)  # e.g. a Bash tool in an earlier run of the session
    with pytest.raises(WorkdirRefused) as caught:
        place(scratch, settings_obj, "s", tempdir)
    assert caught.value.code is ErrorCode.CWD_NOT_ALLOWED


def test_explicit_default_cwd_outside_the_roots_is_not_allowed(tree: Path) -> None:
    settings_obj = make_settings(cwd_roots=[str(tree / "root")], default_cwd=str(tree / "outside"))
    cwd = workdir.default_cwd(settings_obj, "s", str(tree))
    with pytest.raises(WorkdirRefused) as caught:
        place(cwd, settings_obj, "s", str(tree))
    assert caught.value.code is ErrorCode.CWD_NOT_ALLOWED
