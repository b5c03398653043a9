"""Where a run's CLI starts: the cwd resolved and kept under CLAUDE_QUEUE_CWD_ROOTS.

A cwd is resolved with realpath (symlinks and `..`) before it is checked, and the
CLI is started in the resolved path, so a symlink swapped after the check does not
move the run. A job without cwd (and a session without a stored one) runs in
CLAUDE_QUEUE_DEFAULT_CWD, or else in its session's private scratch folder:

    <tempdir>/claude-queue-<scope>/sessions/<session_id>    (every level mode 0o700)

The scratch path names no worker, so a session resumed by another worker (or host
with the same tempdir) finds the same cwd and the CLI finds its transcript. It is
created by the worker itself and holds nothing else, so it is allowed even when
CWD_ROOTS does not cover it. An explicit DEFAULT_CWD is an ordinary cwd: it must
exist and lie under the roots, or the run fails (cwd_not_found / cwd_not_allowed).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence

from shared.events import ErrorCode
from shared.settings import Settings

SCRATCH_MODE = 0o700


class WorkdirRefused(Exception):
    """The run cannot start in this folder; `code` is the error event's code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_within(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it, compared by whole components. Pure.

    Both must be absolute and normalised: `/srv/repo-evil` is not within `/srv/repo`.
    """
    return os.path.commonpath([path, root]) == root


def confine(cwd: str, roots: Sequence[str]) -> str:
    """`cwd` resolved, refused outside `roots` (empty: anywhere) or when it is no folder."""
    if not os.path.isabs(cwd) or "\x00" in cwd:
        raise WorkdirRefused(
            ErrorCode.CWD_NOT_ALLOWED, f"working directory {cwd!r} is not an absolute path"
        )
    try:
        resolved = os.path.realpath(cwd)
        real_roots = [os.path.realpath(root) for root in roots]
    except OSError as exc:
        raise WorkdirRefused(
            ErrorCode.CWD_NOT_FOUND, f"working directory {cwd!r} cannot be resolved: {exc}"
        ) from None
    if real_roots and not any(is_within(resolved, root) for root in real_roots):
        shown = cwd if resolved == cwd else f"{cwd!r} (resolved: {resolved!r})"
        raise WorkdirRefused(
            ErrorCode.CWD_NOT_ALLOWED,
            f"working directory {shown} is outside the allowed roots "
            f"(CLAUDE_QUEUE_CWD_ROOTS: {', '.join(roots)})",
        )
    if not os.path.isdir(resolved):
        raise WorkdirRefused(
            ErrorCode.CWD_NOT_FOUND, f"working directory {cwd!r} does not exist on this worker"
        )
    return resolved


def _scratch_parts(scope: str, session_id: str) -> list[str]:
    # Job session ids cannot hold "/" or start with ".", but the path must never depend on it.
    name = session_id
    if os.sep in name or name.startswith(".") or not name:
        name = "h-" + hashlib.sha256(session_id.encode()).hexdigest()[:32]
    return [f"claude-queue-{scope}", "sessions", name]


def scratch_path(tempdir: str, scope: str, session_id: str) -> str:
    """The session's scratch folder under `tempdir` (an already resolved path). Pure."""
    return os.path.join(tempdir, *_scratch_parts(scope, session_id))


def default_cwd(settings: Settings, session_id: str, tempdir: str) -> str:
    """Where a job of `session_id` without cwd runs: DEFAULT_CWD, else its scratch folder."""
    return settings.default_cwd or scratch_path(tempdir, settings.scope, session_id)


def ensure_scratch(tempdir: str, scope: str, session_id: str) -> str:
    """Create the scratch folder (each level 0o700) and return it.

    Every level below `tempdir` must be a real folder of this user: in a shared
    /tmp another user could have planted a symlink or a folder of their own.
    """
    path = tempdir
    for part in _scratch_parts(scope, session_id):
        path = os.path.join(path, part)
        try:
            os.mkdir(path, SCRATCH_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WorkdirRefused(
                ErrorCode.CWD_NOT_FOUND, f"cannot create the scratch folder {path!r}: {exc}"
            ) from None
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise WorkdirRefused(
                ErrorCode.CWD_NOT_ALLOWED,
                f"scratch folder {path!r} is not a folder owned by this worker's user",
            )
        if stat.S_IMODE(info.st_mode) != SCRATCH_MODE:
            os.chmod(path, SCRATCH_MODE)  # ours (umask, or an old copy): make it private
    return path


def place(cwd: str, settings: Settings, session_id: str, tempdir: str) -> str:
    """The resolved folder the CLI starts in for a planned `cwd`; raises WorkdirRefused."""
    if cwd == scratch_path(tempdir, settings.scope, session_id):
        return ensure_scratch(tempdir, settings.scope, session_id)
    return confine(cwd, settings.cwd_roots)
