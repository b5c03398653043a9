"""Portable transcripts: carry the CLI's conversation file between worker hosts.

The CLI keeps each conversation in `<config dir>/projects/<cwd slug>/<id>.jsonl`
(config dir: $CLAUDE_CONFIG_DIR, else $HOME/.claude) and `--resume` only looks
there. After a run the worker stores that one file, compressed and size-capped,
in Redis under the session; before a resume on a host that lacks it (or has an
older copy) the worker writes it back. Only the transcript file is carried.

Everything read back from Redis is untrusted: the conversation id must be a UUID,
every path must resolve inside `<config dir>/projects/`, and the stored data must
inflate to its recorded SHA-256; otherwise `CorruptStateError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import cast

import redis

from shared.ids import is_claude_session_id

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
# A stored transcript never inflates past this: a zlib bomb in Redis must not take
# the worker's memory (real ones are far smaller; TRANSCRIPT_MAX_BYTES caps them packed).
MAX_INFLATED_BYTES = 1024 * 1024 * 1024


class CorruptStateError(ValueError):
    """A value read back from Redis failed validation; nothing was read or written."""


def config_dir(env: Mapping[str, str]) -> Path:
    """Where the CLI keeps its state, for the environment it runs with."""
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"])
    return Path(env.get("HOME") or Path.home()) / ".claude"


def require_claude_session_id(claude_session_id: str) -> None:
    """Raise CorruptStateError unless this is a conversation id the CLI could have made."""
    if not is_claude_session_id(claude_session_id):
        raise CorruptStateError(f"conversation id {claude_session_id!r} is not a UUID")


def transcript_path(env: Mapping[str, str], cwd: str, claude_session_id: str) -> Path:
    """The file the CLI reads on `--resume=<claude_session_id>` when run in `cwd`."""
    require_claude_session_id(claude_session_id)
    projects = config_dir(env) / "projects"
    slug = _NON_ALNUM.sub("-", os.path.abspath(cwd))
    path = projects / slug / f"{claude_session_id}.jsonl"
    _require_inside(path, projects)
    return path


def _require_inside(path: Path, projects: Path) -> None:
    # After symlinks and `..`: a transcript is only ever read or written in the CLI's
    # own project folder, whatever the id or a symlinked folder says.
    if not path.resolve().is_relative_to(projects.resolve()):
        raise CorruptStateError(f"transcript path {str(path)!r} lies outside {str(projects)!r}")


def find_local(env: Mapping[str, str], cwd: str, claude_session_id: str) -> Path | None:
    """The newest local copy of a transcript.

    The CLI appends to the file where the conversation began even when resumed from
    another cwd, so look in every project folder, not only the one for `cwd`: one stat
    per folder, and a host gains a folder for every cwd its sessions ran in.
    """
    return _newest_copy(transcript_path(env, cwd, claude_session_id), claude_session_id)


@dataclass(frozen=True, slots=True)
class LocalCopy:
    """The local copy of a conversation a run resumes from, as it was before the run."""

    path: Path
    size: int


def find_written(
    env: Mapping[str, str], cwd: str, claude_session_id: str, resumed: LocalCopy | None
) -> Path | None:
    """The copy this run's CLI wrote, found without looking in every project folder;
    None when that cannot be told (then `find_local` looks everywhere).

    Before the run, the copy it resumed from was the newest one on this host (restore
    chose it, or wrote it), and a new conversation had none. So what this run wrote is
    the newer of that copy and the one in `cwd`'s folder, provided it was written in
    this run: the resumed copy counts only if it grew (the CLI appends), and a copy in
    `cwd`'s folder that is newer than the resumed one was written after it.
    """
    computed = transcript_path(env, cwd, claude_session_id)
    candidates = [str(computed)]
    if resumed is not None and resumed.path.name == computed.name and resumed.path != computed:
        candidates.append(str(resumed.path))
    best = _newest_of(candidates, computed.parent.parent)
    if best is None or resumed is None or best[1] != resumed.path:
        return None if best is None else best[1]
    return best[1] if best[0].st_size > resumed.size else None


class Restore(StrEnum):
    PRESENT = "present"  # the local copy is already the stored one
    RESTORED = "restored"  # written from Redis
    LOCAL_ONLY = "local_only"  # nothing stored, but the file is here
    MISSING = "missing"  # neither here nor in Redis


@dataclass(frozen=True, slots=True)
class SavedTranscript:
    stored: bool
    size: int
    compressed: int


def save(
    client: redis.Redis,
    key: str,
    path: Path,
    *,
    claude_session_id: str,
    max_bytes: int,
    ttl_s: int,
) -> SavedTranscript:
    """Store the transcript at `path` under `key`; not stored if it compresses past max_bytes."""
    require_claude_session_id(claude_session_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SavedTranscript(stored=False, size=0, compressed=0)
    packed = zlib.compress(raw, 6)
    if len(packed) > max_bytes:
        client.hset(key, mapping={"too_large": 1, "claude_session_id": claude_session_id})
        client.hdel(key, "data")
        return SavedTranscript(stored=False, size=len(raw), compressed=len(packed))
    client.hset(
        key,
        mapping={
            "claude_session_id": claude_session_id,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "size": len(raw),
            "data": packed,
            "too_large": 0,
        },
    )
    client.expire(key, ttl_s)
    return SavedTranscript(stored=True, size=len(raw), compressed=len(packed))


def restore(
    client: redis.Redis, key: str, path: Path, *, claude_session_id: str
) -> tuple[Restore, LocalCopy | None]:
    """Make sure the stored transcript of `claude_session_id` is where the CLI will look,
    and say where that copy is (None: no copy here).

    `path` is where to write it if this host has no copy; an existing local copy
    (wherever it is) is overwritten in place when it differs from the stored one.
    Raises CorruptStateError when what Redis holds fails validation.
    """
    require_claude_session_id(claude_session_id)
    _require_inside(path, path.parent.parent)
    stored = cast(dict[bytes, bytes], client.hgetall(key))
    stored_id = stored.get(b"claude_session_id")
    if stored_id is not None and not is_claude_session_id(stored_id.decode(errors="replace")):
        raise CorruptStateError(
            f"the stored transcript names conversation {stored_id.decode(errors='replace')!r}, "
            "which is not a UUID"
        )
    data = stored.get(b"data")
    local = _newest_copy(path, claude_session_id)
    if data is None or stored_id is None or stored_id.decode() != claude_session_id:
        return (Restore.LOCAL_ONLY, _as_copy(local)) if local else (Restore.MISSING, None)
    want = stored.get(b"sha256", b"").decode(errors="replace")
    if local and hashlib.sha256(local.read_bytes()).hexdigest() == want:
        return Restore.PRESENT, _as_copy(local)
    raw = _inflate(data)
    if hashlib.sha256(raw).hexdigest() != want:
        raise CorruptStateError("the stored transcript does not match its SHA-256")
    target = local or path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(raw)
        temp = Path(handle.name)
    temp.replace(target)  # atomic: the CLI never sees half a transcript
    return Restore.RESTORED, LocalCopy(target, len(raw))


def _as_copy(path: Path) -> LocalCopy | None:
    try:
        return LocalCopy(path, path.stat().st_size)
    except OSError:
        return None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise CorruptStateError(f"the stored transcript is not valid zlib data ({exc})") from None
    if len(raw) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise CorruptStateError(f"the stored transcript inflates past {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise CorruptStateError("the stored transcript is truncated")
    return raw


def _newest_copy(path: Path, claude_session_id: str) -> Path | None:
    """Newest `<projects>/*/<id>.jsonl`, where `path` is one such (maybe absent) file."""
    require_claude_session_id(claude_session_id)
    projects = path.parent.parent
    # One stat per project folder (the id is a validated UUID, never a pattern); pathlib's
    # glob and a resolve() of every candidate took ~1 ms before each run's `finished`.
    name = f"{claude_session_id}.jsonl"
    try:
        folders = os.scandir(projects)
    except OSError:
        return None
    with folders:
        candidates = [os.path.join(folder.path, name) for folder in folders]
    best = _newest_of(candidates, projects)
    return None if best is None else best[1]


def _newest_of(candidates: list[str], projects: Path) -> tuple[os.stat_result, Path] | None:
    """The newest of these files that is a copy: non-empty, regular, inside `projects`."""
    found: list[tuple[int, os.stat_result, str]] = []
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        # An empty file is no conversation to the CLI, so it is no copy to us either.
        if stat.S_ISREG(info.st_mode) and info.st_size > 0:
            found.append((info.st_mtime_ns, info, candidate))
    # A symlink out of the project folder is never followed (it would be written through).
    root = projects.resolve()
    for _mtime, info, candidate in sorted(found, key=lambda item: item[0], reverse=True):
        if Path(candidate).resolve().is_relative_to(root):
            return info, Path(candidate)
    return None
