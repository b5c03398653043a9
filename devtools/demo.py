"""`make demo`: one prompt through the whole system, streamed to this terminal.

Starts a real worker process, submits a prompt, renders every event as it
arrives through Redis, then stops the worker. It runs the real `claude` CLI
(installed by `make install` into devtools/claude-cli).

Mode, always announced:
- live: ANTHROPIC_API_KEY is set or a Claude login exists; the real model answers.
- offline: neither exists; a local fake Anthropic API (devtools.fake_anthropic)
  answers with a scripted tool call and a streamed reply. No network, no credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from devtools.fake_anthropic import SCENARIOS, FakeAnthropic
from producer.client import Client
from producer.render import Renderer
from shared.envnames import SettingsError
from shared.events import EventType
from shared.settings import Settings

REPO = Path(__file__).resolve().parent.parent
LOCAL_CLI = REPO / "devtools" / "claude-cli" / "node_modules" / ".bin" / "claude"
OFFLINE_PROMPT = "Show me that tools work: run a harmless shell command, then explain."
LIVE_PROMPT = (
    "Use the Bash tool to list the files in the current directory, "
    "then say in one sentence what kind of project it is."
)


def has_credentials() -> bool:
    """An API key in the environment, or a stored CLI login."""
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return True
    return (Path.home() / ".claude" / ".credentials.json").exists()


def _worker_env(settings: Settings, extra_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_QUEUE_")}
    env.update(
        {
            "CLAUDE_QUEUE_REDIS_URL": settings.redis_url.get_secret_value(),
            "CLAUDE_QUEUE_QUEUE_NAME": settings.queue_name,
            "CLAUDE_QUEUE_KEY_PREFIX": settings.key_prefix,
            "CLAUDE_QUEUE_CLAUDE_BIN": settings.claude_bin,
            "CLAUDE_QUEUE_EXTRA_ENV": json.dumps(extra_env),
            "CLAUDE_QUEUE_LOG_FORMAT": "json",
        }
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--mode", choices=["auto", "offline", "live"], default="auto")
    parser.add_argument("--prompt", help="Prompt to send (default depends on the mode).")
    args = parser.parse_args(argv)

    console = Console(highlight=False)
    try:
        base = Settings.from_environment()
    except SettingsError as exc:
        console.print(f"[red]error: invalid configuration: {exc}[/]")
        return 2
    claude_bin = os.environ.get("CLAUDE_QUEUE_CLAUDE_BIN") or (
        str(LOCAL_CLI) if LOCAL_CLI.exists() else "claude"
    )
    settings = base.model_copy(
        update={"claude_bin": claude_bin, "queue_name": f"{base.queue_name}-demo"}
    )
    offline = args.mode == "offline" or (args.mode == "auto" and not has_credentials())
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cq-demo-")))
        extra_env: dict[str, str] = {}
        if offline:
            api = stack.enter_context(FakeAnthropic(SCENARIOS["demo"]()))
            home = workdir / "home"
            home.mkdir()
            extra_env = {
                "ANTHROPIC_BASE_URL": api.base_url,
                "ANTHROPIC_API_KEY": "sk-offline-demo-not-a-real-key",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "HOME": str(home),
            }
            console.print(
                Panel(
                    "[bold yellow]OFFLINE DEMO MODE[/]: no ANTHROPIC_API_KEY and no Claude login "
                    f"found.\nThe real claude CLI ({claude_bin}) runs on a real worker, but its "
                    f"model is a local fake API at {api.base_url} with scripted answers.\n"
                    "Set ANTHROPIC_API_KEY (or log in with `claude`) for the live model.",
                    title="claude-queue demo",
                )
            )
        else:
            console.print(
                Panel(
                    "[bold green]LIVE MODE[/]: the real claude CLI talks to the real model "
                    "with your credentials.",
                    title="claude-queue demo",
                )
            )
        prompt = args.prompt or (OFFLINE_PROMPT if offline else LIVE_PROMPT)
        log_path = workdir / "worker.log"
        with log_path.open("wb") as log_file:
            worker = subprocess.Popen(
                [sys.executable, "-m", "producer", "worker", "--name", f"demo-{os.getpid()}"],
                env=_worker_env(settings, extra_env),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            return _submit_and_follow(console, settings, prompt, workdir)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            if worker.returncode not in (0, -signal.SIGTERM):
                console.print(f"[red]worker exited with {worker.returncode}; its log:[/]")
                console.print(log_path.read_text(errors="replace")[-4000:])


def _submit_and_follow(console: Console, settings: Settings, prompt: str, workdir: Path) -> int:
    with Client(settings) as client:
        session_id = f"demo-{int(time.time())}"
        console.print(f"[bold]submit[/] session {session_id}: {prompt}")
        handle = client.submit(
            session_id=session_id,
            prompt=prompt,
            profile="bash",
            cwd=str(workdir),
            include_partial_messages=True,
        )
        renderer = Renderer(console)
        status = "unknown"
        for envelope in handle.stream(timeout_s=300):
            renderer.show(envelope)
            if envelope.type is EventType.FINISHED:
                status = str(envelope.data.get("status"))
        console.print(
            f"\nReplay this session any time: [bold]claude-queue tail {session_id} --no-follow[/]"
        )
        return 0 if status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
