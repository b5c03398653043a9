"""Producer side of claude-queue: submit prompts, stream and replay events, cancel runs,
answer permission requests.

from producer import Client
client = Client.from_url("redis://localhost:6379/0")
handle = client.submit(session_id="s1", prompt="Summarise README.md")
for envelope in handle.stream():
    print(envelope.type, envelope.data)

Everything a user needs is exported here (`__all__`); other modules are private.
Names are imported on first use (PEP 562), so `python -m producer worker` does not pay
for the clients' imports (asyncio clients, the archive's psycopg, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer.aio import AsyncClient, AsyncRunHandle
    from producer.approvals import AnswerOutcome, AnswerResult, OpenRequest
    from producer.cancelling import CancelOutcome, CancelResult
    from producer.client import Client, RunHandle
    from producer.errors import (
        ClaudeQueueError,
        InvalidJobError,
        RedisUnavailable,
        SessionBusy,
        SettingsError,
        StreamEnded,
        StreamTimeout,
    )
    from producer.result import RunResult
    from producer.sessions import SessionInfo, SessionState
    from producer.status import QueueStatus, WorkerInfo, WorkerState
    from shared.blocks import (
        ContentBlock,
        ImageBlock,
        MalformedBlock,
        RedactedThinkingBlock,
        ServerToolUseBlock,
        TextBlock,
        ThinkingBlock,
        ToolResultBlock,
        ToolUseBlock,
        UnknownBlock,
    )
    from shared.events import (
        DecisionReason,
        Envelope,
        ErrorCode,
        ErrorData,
        EventData,
        EventType,
        FinishedData,
        InitData,
        InterruptedData,
        MessageData,
        PermissionDecisionData,
        PermissionRequestData,
        QueuedData,
        RateLimitData,
        ResultData,
        RetryData,
        RunStatus,
        StartedData,
        StreamEventData,
        TextData,
        TypedEventData,
        UnknownEventData,
    )
    from shared.exitcodes import ExitCode
    from shared.jobs import OnBusy, PromptJob, ResumePolicy
    from shared.settings import Settings

# Exported name -> the module that defines it.
_SOURCES = {
    "AnswerOutcome": "producer.approvals",
    "AnswerResult": "producer.approvals",
    "AsyncClient": "producer.aio",
    "AsyncRunHandle": "producer.aio",
    "CancelOutcome": "producer.cancelling",
    "CancelResult": "producer.cancelling",
    "ClaudeQueueError": "producer.errors",
    "Client": "producer.client",
    "ContentBlock": "shared.blocks",
    "DecisionReason": "shared.events",
    "Envelope": "shared.events",
    "ErrorCode": "shared.events",
    "ErrorData": "shared.events",
    "EventData": "shared.events",
    "EventType": "shared.events",
    "ExitCode": "shared.exitcodes",
    "FinishedData": "shared.events",
    "ImageBlock": "shared.blocks",
    "InitData": "shared.events",
    "InterruptedData": "shared.events",
    "InvalidJobError": "producer.errors",
    "MalformedBlock": "shared.blocks",
    "MessageData": "shared.events",
    "OnBusy": "shared.jobs",
    "OpenRequest": "producer.approvals",
    "PermissionDecisionData": "shared.events",
    "PermissionRequestData": "shared.events",
    "PromptJob": "shared.jobs",
    "QueueStatus": "producer.status",
    "QueuedData": "shared.events",
    "RateLimitData": "shared.events",
    "RedactedThinkingBlock": "shared.blocks",
    "RedisUnavailable": "producer.errors",
    "ResultData": "shared.events",
    "ResumePolicy": "shared.jobs",
    "RetryData": "shared.events",
    "RunHandle": "producer.client",
    "RunResult": "producer.result",
    "RunStatus": "shared.events",
    "ServerToolUseBlock": "shared.blocks",
    "SessionBusy": "producer.errors",
    "SessionInfo": "producer.sessions",
    "SessionState": "producer.sessions",
    "Settings": "shared.settings",
    "SettingsError": "producer.errors",
    "StartedData": "shared.events",
    "StreamEnded": "producer.errors",
    "StreamEventData": "shared.events",
    "StreamTimeout": "producer.errors",
    "TextBlock": "shared.blocks",
    "TextData": "shared.events",
    "ThinkingBlock": "shared.blocks",
    "ToolResultBlock": "shared.blocks",
    "ToolUseBlock": "shared.blocks",
    "TypedEventData": "shared.events",
    "UnknownBlock": "shared.blocks",
    "UnknownEventData": "shared.events",
    "WorkerInfo": "producer.status",
    "WorkerState": "producer.status",
}

__all__ = [
    "AnswerOutcome",
    "AnswerResult",
    "AsyncClient",
    "AsyncRunHandle",
    "CancelOutcome",
    "CancelResult",
    "ClaudeQueueError",
    "Client",
    "ContentBlock",
    "DecisionReason",
    "Envelope",
    "ErrorCode",
    "ErrorData",
    "EventData",
    "EventType",
    "ExitCode",
    "FinishedData",
    "ImageBlock",
    "InitData",
    "InterruptedData",
    "InvalidJobError",
    "MalformedBlock",
    "MessageData",
    "OnBusy",
    "OpenRequest",
    "PermissionDecisionData",
    "PermissionRequestData",
    "PromptJob",
    "QueueStatus",
    "QueuedData",
    "RateLimitData",
    "RedactedThinkingBlock",
    "RedisUnavailable",
    "ResultData",
    "ResumePolicy",
    "RetryData",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "ServerToolUseBlock",
    "SessionBusy",
    "SessionInfo",
    "SessionState",
    "Settings",
    "SettingsError",
    "StartedData",
    "StreamEnded",
    "StreamEventData",
    "StreamTimeout",
    "TextBlock",
    "TextData",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "TypedEventData",
    "UnknownBlock",
    "UnknownEventData",
    "WorkerInfo",
    "WorkerState",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
