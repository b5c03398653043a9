"""Producer side of claude-queue: submit prompts, stream and replay events, cancel runs,
answer permission requests.

from producer import Client
client = Client.from_url("redis://localhost:6379/0")
handle = client.submit(session_id="s1", prompt="Summarise README.md")
for envelope in handle.stream():
    print(envelope.type, envelope.data)

Everything a user needs is exported here (`__all__`); other modules are private.
"""

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
