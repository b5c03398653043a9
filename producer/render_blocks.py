"""A message's content blocks as rich renderables: answers as Markdown, a tool call as
its name and key argument on one line, its result as a collapsed preview, thinking dimmed.

Everything here builds `Text`, `Markdown` or `Syntax` objects from untrusted strings;
nothing is parsed as rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from rich.console import RenderableType
from rich.syntax import Syntax
from rich.text import Text

from producer.render_text import one_line, short
from shared.blocks import (
    ContentBlock,
    RedactedThinkingBlock,
    ServerToolUseBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)


class Verbosity(IntEnum):
    QUIET = 0  # the final answer only
    NORMAL = 1
    VERBOSE = 2  # every event, tool inputs and results in full


KEY_ARGUMENT_CHARS = 100
RESULT_PREVIEW_CHARS = 100
THINKING_PREVIEW_CHARS = 300
FULL_CHARS = 20_000  # even --verbose cuts a single string somewhere

# The argument a person recognises a call by, per tool; others: the first string value.
_KEY_ARGUMENTS = {
    "Bash": ("command",),
    "Read": ("file_path",),
    "Write": ("file_path",),
    "Edit": ("file_path",),
    "MultiEdit": ("file_path",),
    "NotebookEdit": ("notebook_path",),
    "Glob": ("pattern",),
    "Grep": ("pattern",),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Task": ("description",),
}


def key_argument(tool_name: str, tool_input: Mapping[str, Any]) -> str:
    """The one argument that says what a tool call does, on one line (`ls -la`, `src/app.py`)."""
    names = _KEY_ARGUMENTS.get(tool_name, ())
    for name in names:
        value = tool_input.get(name)
        if isinstance(value, str) and value:
            return one_line(value, KEY_ARGUMENT_CHARS)
    if tool_name == "TodoWrite" and isinstance(tool_input.get("todos"), list):
        return f"{len(tool_input['todos'])} items"
    for value in tool_input.values():
        if isinstance(value, str) and value:
            return one_line(value, KEY_ARGUMENT_CHARS)
    return ""


def tool_result_text(content: str | list[Any] | None) -> str:
    """The text parts of a tool result (the API's content parts, matched by shape)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        match part:
            case {"text": str(text)} if text:
                parts.append(text)
    return "\n".join(parts)


class BlockRenderer:
    """Turns content blocks into renderables at a verbosity, for a terminal or a pipe."""

    def __init__(self, verbosity: Verbosity, *, terminal: bool) -> None:
        self.verbosity = verbosity
        self.terminal = terminal

    def answer(self, text: str) -> RenderableType:
        """Assistant text: Markdown on a terminal; as written in a pipe (grep-able)."""
        if not self.terminal:
            return Text(text)
        from rich.markdown import Markdown  # markdown-it: only where it renders

        return Markdown(text)

    def block(self, block: ContentBlock) -> RenderableType | None:
        """The renderable of one block; None when nothing is shown for it."""
        if isinstance(block, TextBlock):
            return self.answer(block.text)
        if isinstance(block, ThinkingBlock):
            return self._thinking(block.thinking)
        if isinstance(block, ToolUseBlock | ServerToolUseBlock):
            return self._tool_use(block.name, block.input)
        if isinstance(block, ToolResultBlock):
            return self._tool_result(tool_result_text(block.content), is_error=bool(block.is_error))
        if isinstance(block, RedactedThinkingBlock):
            return Text("(redacted thinking)", style="dim") if self._verbose else None
        return Text(f"[{block.type} block]", style="dim")

    @property
    def _verbose(self) -> bool:
        return self.verbosity >= Verbosity.VERBOSE

    def _thinking(self, thinking: str) -> Text:
        body = short(thinking, FULL_CHARS if self._verbose else THINKING_PREVIEW_CHARS)
        return Text.assemble(("thinking: ", "dim"), (body, "dim italic"))

    def _tool_use(self, name: str, tool_input: Mapping[str, Any]) -> RenderableType:
        line = Text.assemble(("→ ", "cyan"), (name, "bold cyan"))
        argument = key_argument(name, tool_input)
        if argument:
            line.append("  ")
            line.append(argument)
        if not self._verbose:
            return line
        encoded = short(json.dumps(tool_input, ensure_ascii=False, indent=2), FULL_CHARS)
        if not self.terminal:
            return Text.assemble(line, "\n", encoded)
        from rich.console import Group

        return Group(line, Syntax(encoded, "json", word_wrap=True, background_color="default"))

    def _tool_result(self, text: str, *, is_error: bool) -> Text:
        style = "red" if is_error else "dim"
        mark = "✗ " if is_error else "← "
        if self._verbose:
            return Text.assemble((mark, style), (short(text, FULL_CHARS), style))
        preview = one_line(text, RESULT_PREVIEW_CHARS) or "(no output)"
        return Text.assemble((mark, style), (preview, style))
