"""Reading the README's command summary and Python snippets, to check them against the code."""

from __future__ import annotations

import functools
import re

from click.testing import CliRunner

from producer.cli import main
from tests.conftest import REPO

README = REPO / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def summary_block(text: str) -> str:
    """The bash block that lists the commands (it shows `claude-queue tail`)."""
    found = [block for block in code_blocks(text, "bash") if "claude-queue tail " in block]
    assert len(found) == 1, "one README bash block lists the commands"
    return found[0]


GROUPS = ("session", "cron", "archive")  # commands with subcommands


def summary_entries(block: str) -> dict[str, str]:
    """`submit` / `session show` -> the text of its lines (indented lines continue one)."""
    entries: dict[str, str] = {}
    key = ""
    for raw in block.splitlines():
        line = raw.split("  #")[0]
        if line.startswith("claude-queue "):
            words = line.split()[1:]
            key = " ".join(words[:2]) if words[0] in GROUPS else words[0]
            entries[key] = entries.get(key, "") + " " + line
        elif line.startswith(" ") and key:
            entries[key] += " " + line
    return entries


@functools.cache
def help_text(*command: str) -> str:
    """A command's --help, from the real click command run in this process: the help of
    some 40 commands, where a process each cost ~0.7 s of CPU (tests/cli/test_readme.py
    took 40 s under `make test`). The commands themselves run as processes elsewhere."""
    done = CliRunner().invoke(main, [*command, "--help"], terminal_width=80)
    assert done.exit_code == 0, done.output
    return done.output


def listed_commands(help_output: str) -> list[str]:
    """The command names of a group's --help (its `Commands:` section)."""
    section = help_output.split("Commands:", 1)[1]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ")]


def help_options(help_output: str) -> set[str]:
    """Every option a --help names (its `Options:` section), but -h/--help."""
    section = help_output.split("Options:", 1)[1].split("Commands:", 1)[0]
    names = (
        re.split(r"\s{2,}", line.strip())[0]  # `-v, --verbose` of `-v, --verbose  Show ...`
        for line in section.splitlines()
        if line.startswith("  -")
    )
    return {option for name in names for option in _OPTION.findall(name)} - {"-h", "--help"}
