"""Developer tooling: a fake Anthropic API and helpers to drive the pinned Claude Code CLI."""
