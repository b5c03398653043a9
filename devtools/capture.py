"""Re-record the real Claude Code CLI's stream-json output against the fake API.

    python -m devtools.capture --out tests/fixtures/cli [--only text,error-429]

Each scenario runs the pinned binary (devtools/claude-cli) with an isolated HOME and cwd,
the prompt on stdin, and writes ``<name>.jsonl`` (sanitised stdout) plus ``<name>.meta.json``
(exit code, duration, stderr tail, request count). Sanitising swaps run-specific paths and
the port for stable placeholders so re-recording produces small diffs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devtools.fake_anthropic import (
    SCENARIOS,
    FakeAnthropic,
    TextTurn,
    Turn,
    bash_turn,
    error_turn,
)

REPO: Final = Path(__file__).resolve().parent.parent
CLI: Final = REPO / "devtools" / "claude-cli" / "node_modules" / ".bin" / "claude"
VERSION: Final = "2.1.330"
BASE_ARGS: Final = ("-p", "--output-format", "stream-json", "--verbose")
STDERR_TAIL: Final = 2000
TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class Scenario:
    """One CLI invocation to record. ``setup`` may prepare HOME/cwd and return extra args."""

    name: str
    script: Callable[[], list[Turn]]
    args: tuple[str, ...] = ()
    prompt: str = "Say hello."
    env: Mapping[str, str] = field(default_factory=dict)
    api_key: bool = True
    setup: Callable[[Sandbox], tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Sandbox:
    """Per-run HOME, cwd and TMPDIR under one temp root, so nothing leaks between runs."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def cwd(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        # The CLI honours TMPDIR for its messaging socket and per-project scratch files.
        return self.root / "tmp"

    @classmethod
    def create(cls) -> Sandbox:
        sandbox = cls(Path(tempfile.mkdtemp(prefix="cli-capture-")).resolve())
        for path in (sandbox.home, sandbox.cwd, sandbox.tmp):
            path.mkdir()
        return sandbox


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int
    duration_s: float
    conversation_requests: int
    side_requests: int


def cli_env(box: Sandbox, base_url: str, api_key: bool, extra: Mapping[str, str]) -> dict[str, str]:
    # Minimal env, not os.environ: the developer's own ANTHROPIC_* / CLAUDE_* settings must
    # not leak into recordings. The nonessential-traffic switch keeps the CLI off the network.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(box.home),
        "TMPDIR": str(box.tmp),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": base_url,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    if api_key:
        env["ANTHROPIC_API_KEY"] = "sk-test-fake"
    env.update(extra)
    return env


def run_cli(
    script: Sequence[Turn],
    box: Sandbox,
    *,
    args: Sequence[str] = (),
    prompt: str = "Say hello.",
    env: Mapping[str, str] = {},
    api_key: bool = True,
) -> tuple[RunResult, int]:
    """Run the CLI once against a fresh fake; returns the result and the fake's port."""
    with FakeAnthropic(script) as api:
        started = time.monotonic()
        proc = subprocess.run(
            [str(CLI), *BASE_ARGS, *args],
            input=prompt.encode(),  # stdin is closed after the prompt, as the worker does
            capture_output=True,
            cwd=box.cwd,
            env=cli_env(box, api.base_url, api_key, env),
            timeout=TIMEOUT_S,
            check=False,
        )
        result = RunResult(
            stdout=proc.stdout.decode(),
            stderr=proc.stderr.decode(),
            exit_code=proc.returncode,
            duration_s=round(time.monotonic() - started, 1),
            conversation_requests=len(api.conversation_requests),
            side_requests=len(api.side_requests),
        )
        return result, api.port


def project_slug(path: Path) -> str:
    """Directory name the CLI uses under ~/.claude/projects: every non-alphanumeric -> '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


def sanitise(text: str, box: Sandbox, port: int) -> str:
    replacements = {
        str(box.cwd): "/CWD",
        str(box.tmp): "/TMP",
        str(box.home): "/HOME",
        project_slug(box.cwd): "-CWD",
        f"127.0.0.1:{port}": "127.0.0.1:PORT",
    }
    for old, new in replacements.items():
        text = text.replace(old, new)
    # The messaging socket is named after the CLI's pid. Patterns start with a literal so
    # they stay linear on megabyte-long lines.
    return re.sub(r"/TMP/cc-socks/\d+\.sock", "/TMP/cc-socks/PID.sock", text)


# --------------------------------------------------------------------------- scenarios


def _resume_setup(box: Sandbox) -> tuple[str, ...]:
    """Record a first session so the captured run can --resume it."""
    first, _ = run_cli([TextTurn("First answer.")], box, prompt="First question.")
    session_id = json.loads(first.stdout.splitlines()[0])["session_id"]
    return (f"--resume={session_id}",)


def _missing_resume_setup(box: Sandbox) -> tuple[str, ...]:
    # Fixed id so the fixture is stable across re-recordings.
    return (f"--resume={uuid.UUID(int=0xC0FFEE)}",)


_NO_RETRY: Final = {"CLAUDE_CODE_MAX_RETRIES": "0"}

CAPTURES: Final[tuple[Scenario, ...]] = (
    Scenario("text", SCENARIOS["text"]),
    Scenario("text-partial", SCENARIOS["text"], ("--include-partial-messages",)),
    Scenario("thinking", SCENARIOS["thinking"]),
    Scenario("thinking-partial", SCENARIOS["thinking"], ("--include-partial-messages",)),
    Scenario("bash-allowed", SCENARIOS["bash"], ("--allowed-tools=Bash",)),
    Scenario(
        "bash-allowed-partial",
        SCENARIOS["bash"],
        ("--allowed-tools=Bash", "--include-partial-messages"),
    ),
    Scenario(
        "bash-denied",
        lambda: [bash_turn("touch created-by-tool.txt"), TextTurn("I was not allowed.")],
    ),
    Scenario("bash-readonly-default-mode", SCENARIOS["bash"]),
    Scenario(
        "bash-sleep-blocked",
        lambda: [bash_turn("sleep 30"), TextTurn("Blocked.")],
        ("--allowed-tools=Bash",),
    ),
    Scenario("demo", SCENARIOS["demo"], ("--allowed-tools=Bash", "--include-partial-messages")),
    Scenario("model-flag", SCENARIOS["text"], ("--model=claude-sonnet-4-5",)),
    Scenario("dashdash-prompt", SCENARIOS["text"], prompt="--help --version"),
    Scenario("big", SCENARIOS["big"]),
    Scenario("slow-partial", SCENARIOS["slow"], ("--include-partial-messages",)),
    *(
        Scenario(f"error-{status}", SCENARIOS[f"error-{status}"], env=_NO_RETRY)
        for status in (400, 401, 429, 500, 529)
    ),
    Scenario(
        "error-529-retried",
        lambda: [error_turn(529, times=100)],
        env={"CLAUDE_CODE_MAX_RETRIES": "2"},
    ),
    Scenario(
        "error-429-then-ok",
        lambda: [error_turn(429), TextTurn("Recovered after a retry.")],
        env={"CLAUDE_CODE_MAX_RETRIES": "1"},
    ),
    Scenario("max-turns", SCENARIOS["bash"], ("--allowed-tools=Bash", "--max-turns=1")),
    Scenario("no-api-key", SCENARIOS["text"], api_key=False),
    Scenario(
        "resume",
        lambda: [TextTurn("Second answer.")],
        prompt="Second question.",
        setup=_resume_setup,
    ),
    Scenario("resume-missing", SCENARIOS["text"], setup=_missing_resume_setup),
    Scenario("bypass-as-root", SCENARIOS["text"], ("--permission-mode=bypassPermissions",)),
)


def capture(scenario: Scenario, out_dir: Path) -> RunResult:
    box = Sandbox.create()
    try:
        extra_args = scenario.setup(box) if scenario.setup else ()
        args = (*scenario.args, *extra_args)
        result, port = run_cli(
            scenario.script(),
            box,
            args=args,
            prompt=scenario.prompt,
            env=scenario.env,
            api_key=scenario.api_key,
        )

        def clean(text: str) -> str:
            return sanitise(text, box, port)

        (out_dir / f"{scenario.name}.jsonl").write_text(clean(result.stdout))
        meta = {
            "scenario": scenario.name,
            "cli_version": VERSION,
            "argv": ["claude", *BASE_ARGS, *(clean(a) for a in args)],
            "prompt": scenario.prompt,
            "env": {"ANTHROPIC_API_KEY": "sk-test-fake"} if scenario.api_key else {},
            "extra_env": dict(scenario.env),
            "ran_as_root": os.geteuid() == 0,  # bypassPermissions is refused for root
            "exit_code": result.exit_code,
            "duration_s": result.duration_s,
            "conversation_requests": result.conversation_requests,
            "side_requests": result.side_requests,
            "stderr_tail": clean(result.stderr[-STDERR_TAIL:]),
        }
        meta_path = out_dir / f"{scenario.name}.meta.json"
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        return result
    finally:
        shutil.rmtree(box.root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record real CLI stream-json fixtures.")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "cli")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args(argv)
    if not CLI.exists():
        sys.exit(f"{CLI} missing: run `npm ci` in devtools/claude-cli first")
    version = subprocess.run(
        [str(CLI), "--version"], check=False, capture_output=True, text=True
    ).stdout
    if not version.startswith(VERSION + " "):
        sys.exit(f"expected Claude Code {VERSION}, found {version.strip()!r}")
    wanted = {name for name in args.only.split(",") if name}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "VERSION").write_text(VERSION + "\n")
    for scenario in CAPTURES:
        if wanted and scenario.name not in wanted:
            continue
        result = capture(scenario, args.out)
        lines = len(result.stdout.splitlines())
        print(f"{scenario.name}: exit={result.exit_code} lines={lines} {result.duration_s}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
