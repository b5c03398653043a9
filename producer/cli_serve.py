"""`claude-queue serve`: the HTTP gateway (gateway/), under uvicorn."""

from __future__ import annotations

import click

from producer.cli_common import fail, settings_or_exit
from shared.exitcodes import ExitCode


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes (uvicorn workers); each builds its settings from the environment.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen beyond loopback with no API keys configured: anyone who reaches it may do "
    "everything.",
)
def serve(host: str, port: int, workers: int, insecure: bool) -> None:
    """Serve the HTTP gateway: submit, stream (SSE), cancel, approve, sessions, status.

    Without CLAUDE_QUEUE_API_KEYS every request is allowed, so it then listens only on
    a loopback address unless --insecure is given.
    """
    settings = settings_or_exit()
    from gateway.serve import bind_refusal, run

    refusal = bind_refusal(settings, host, insecure)
    if refusal is not None:
        fail(refusal, ExitCode.USAGE)
    run(settings, host=host, port=port, workers=workers, insecure=insecure)
