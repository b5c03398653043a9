"""The README's command summary and Python snippets tell the truth (issue 17): the
summary is checked against every command's --help, the snippets run against a worker."""

from __future__ import annotations

import subprocess
import sys

from shared.settings import Settings
from tests.cli.readme import (
    GROUPS,
    README,
    code_blocks,
    help_options,
    help_text,
    listed_commands,
    summary_block,
    summary_entries,
)
from tests.conftest import REPO, WorkerFactory, worker_env

README_URL = "redis://localhost:6379/0"


def summary_problems(text: str) -> list[str]:
    """Every command and option --help shows that the README's summary leaves out."""
    entries = summary_entries(summary_block(text))
    top = help_text()
    commands = [c for c in listed_commands(top) if c not in GROUPS]
    for group in GROUPS:
        commands += [f"{group} {c}" for c in listed_commands(help_text(group))]
    problems = [f"command {c!r} is missing" for c in commands if c not in entries]
    problems += [f"{c!r} is in the README but not a command" for c in entries if c not in commands]
    for command in commands:
        shown = entries.get(command, "")
        for option in sorted(help_options(help_text(*command.split()))):
            if (
                f"{option} " not in shown + " "
                and f"{option}|" not in shown
                and f"{option}]" not in shown
            ):
                problems.append(f"{command}: {option} is missing")
    if "claude-queue submit - " not in "".join(entries.get("submit", "")):
        problems.append('submit: "-" (prompt from stdin) is missing')
    return problems


def test_the_summary_check_finds_what_is_left_out() -> None:
    shortened = "```bash\nclaude-queue tail s1 [--json]\nclaude-queue nosuch\n```\n"
    problems = summary_problems(shortened)
    assert "tail: --no-follow is missing" in problems
    assert "command 'reap' is missing" in problems
    assert "'nosuch' is in the README but not a command" in problems


def test_the_readme_command_summary_matches_every_help() -> None:
    assert summary_problems(README.read_text()) == []


def run_snippets(text: str, settings: Settings) -> list[subprocess.CompletedProcess[str]]:
    """Each Python block of the README, run as a script against this test's Redis."""
    done = []
    for block in code_blocks(text, "python"):
        assert README_URL in block or "def " in block, block  # runnable, or only definitions
        source = block.replace(README_URL, settings.redis_url.get_secret_value())
        done.append(
            subprocess.run(
                [sys.executable, "-c", source],
                cwd=REPO,
                env=worker_env(settings),
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
        )
    return done


def test_the_readme_snippets_run_against_a_real_worker(
    settings: Settings, start_worker: WorkerFactory
) -> None:
    start_worker()
    results = run_snippets(README.read_text(), settings)
    assert results
    for result in results:
        assert result.returncode == 0, result.stderr
