"""Producer side of claude-queue: submit prompts, stream and replay events, cancel runs.

from producer import Client
client = Client.from_url("redis://localhost:6379/0")
handle = client.submit(session_id="s1", prompt="Summarise README.md")
for envelope in handle.stream():
    print(envelope.type, envelope.data)
"""

from producer.aio import AsyncClient, AsyncRunHandle
from producer.client import Client, RunHandle
from producer.errors import ClaudeQueueError, InvalidJobError, SessionBusy, StreamTimeout
from producer.sessions import SessionInfo

__all__ = [
    "AsyncClient",
    "AsyncRunHandle",
    "ClaudeQueueError",
    "Client",
    "InvalidJobError",
    "RunHandle",
    "SessionBusy",
    "SessionInfo",
    "StreamTimeout",
]
