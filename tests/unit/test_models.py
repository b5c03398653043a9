"""Unit tests for the shared models: PromptJob, validate_job, Settings, Envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from producer.errors import ClaudeQueueError, InvalidJobError
from producer.submission import prepare, validate_job
from shared.encode import encode_body
from shared.envnames import SettingsError
from shared.events import (
    Envelope,
    ErrorCode,
    ErrorData,
    Event,
    EventType,
    FinishedData,
    MessageData,
    QueuedData,
    RunStatus,
)
from shared.jobs import (
    MAX_CONTEXT_BYTES,
    PromptJob,
    RunRequest,
    describe_validation_error,
)
from shared.profiles import PermissionProfile
from shared.runstore import RunCalls
from shared.settings import Settings, check_environment_names
from shared.urls import redact_url

PASSWORD = "s3cr3t-P4ss"
REDIS_URL = f"redis://default:{PASSWORD}@redis.example:6380/2"
RUN_ID = "0123456789abcdef0123456789abcdef"


def job_error(**fields: Any) -> str:
    """The described validation error of a PromptJob built from these fields."""
    values: dict[str, Any] = {"session_id": "s1", "prompt": "hello"}
    values.update(fields)
    with pytest.raises(ValidationError) as info:
        PromptJob(**values)
    return describe_validation_error(info.value)


# --------------------------------------------------------------------------- PromptJob


def test_minimal_job_is_valid_with_defaults() -> None:
    job = PromptJob(session_id="a_b.c-1", prompt="hi")
    assert job.profile is None
    assert job.include_partial_messages is False
    assert job.metadata == {}
    assert job.max_turns is None


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"session_id": "has space"}, "session_id"),
        ({"session_id": "semi;colon"}, "session_id"),
        ({"session_id": "-leading-dash"}, "session_id"),
        ({"session_id": "{braces}"}, "session_id"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": "x" * 129}, "session_id"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n\t "}, "prompt"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"cwd": "relative/dir"}, "cwd"),
        ({"cwd": "./here"}, "cwd"),
        ({"max_turns": 0}, "max_turns"),
        ({"max_turns": 1001}, "max_turns"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"model": "bad model"}, "model"),
        ({"profile": "../etc"}, "profile"),
        ({"bogus_field": 1}, "bogus_field"),
    ],
)
def test_job_validation_error_names_the_field(fields: dict[str, Any], field_name: str) -> None:
    message = job_error(**fields)
    assert message.startswith(f"{field_name}: "), message
    assert ";" not in message  # only the bad field is reported


def test_session_id_max_length_accepted() -> None:
    assert PromptJob(session_id="x" * 128, prompt="p").session_id == "x" * 128


def test_whitespace_prompt_message_explains() -> None:
    assert "whitespace" in job_error(prompt="   ")


def test_oversized_context_is_rejected() -> None:
    big = {"blob": "x" * MAX_CONTEXT_BYTES}
    message = job_error(context=big)
    assert message.startswith("context: ")
    assert str(MAX_CONTEXT_BYTES) in message


def test_context_just_under_limit_is_accepted() -> None:
    overhead = len(json.dumps({"blob": ""}, separators=(",", ":")))
    context = {"blob": "x" * (MAX_CONTEXT_BYTES - overhead)}
    assert PromptJob(session_id="s", prompt="p", context=context).context == context


def test_oversized_metadata_is_rejected() -> None:
    assert job_error(metadata={"m": "x" * 70_000}).startswith("metadata: ")


def test_extra_field_is_forbidden() -> None:
    message = job_error(permission_mode="bypassPermissions")
    assert "permission_mode" in message
    assert "Extra inputs are not permitted" in message


def test_several_bad_fields_are_all_named() -> None:
    message = job_error(session_id="bad id", max_turns=0, cwd="rel")
    for name in ("session_id", "max_turns", "cwd"):
        assert f"{name}: " in message


def test_describe_validation_error_on_plain_exception() -> None:
    assert describe_validation_error(ValueError("plain")) == "plain"


def test_job_is_frozen() -> None:
    job = PromptJob(session_id="s", prompt="p")
    with pytest.raises(ValidationError):
        job.prompt = "changed"  # type: ignore[misc]


def test_run_request_round_trips_through_json() -> None:
    request = RunRequest(
        run_id=RUN_ID,
        submitted_at=1.5,
        job=PromptJob(session_id="s", prompt="p", context={"a": [1, 2]}, max_turns=3),
    )
    again = RunRequest.model_validate(json.loads(json.dumps(request.model_dump(mode="json"))))
    assert again == request


@pytest.mark.parametrize("run_id", ["", "XYZ", "0123456789ABCDEF0123456789ABCDEF", "a" * 31])
def test_run_request_rejects_bad_run_id(run_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunRequest(run_id=run_id, submitted_at=0.0, job=PromptJob(session_id="s", prompt="p"))
    assert describe_validation_error(info.value).startswith("run_id: ")


# --------------------------------------------------------------------------- validate_job


def test_validate_job_from_fields() -> None:
    job = validate_job(Settings(), None, {"session_id": "s1", "prompt": "hi", "profile": "bash"})
    assert job == PromptJob(session_id="s1", prompt="hi", profile="bash")


def test_validate_job_passes_a_model_through() -> None:
    job = PromptJob(session_id="s1", prompt="hi")
    assert validate_job(Settings(), job, {}) is job


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"session_id": "bad id", "prompt": "hi"}, "session_id"),
        ({"session_id": "s", "prompt": " "}, "prompt"),
        ({"session_id": "s", "prompt": "hi", "cwd": "tmp"}, "cwd"),
        ({"session_id": "s", "prompt": "hi", "nope": True}, "nope"),
        ({"prompt": "hi"}, "session_id"),
    ],
)
def test_validate_job_raises_invalid_job_naming_field(
    fields: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(InvalidJobError) as info:
        validate_job(Settings(), None, fields)
    assert f"{field_name}: " in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ClaudeQueueError)


def test_validate_job_unknown_profile() -> None:
    with pytest.raises(InvalidJobError) as info:
        validate_job(Settings(), None, {"session_id": "s", "prompt": "hi", "profile": "root"})
    message = str(info.value)
    assert "profile" in message
    assert "'root'" in message
    for known in ("bash", "edit", "readonly"):
        assert known in message


def test_validate_job_unknown_profile_on_model() -> None:
    job = PromptJob(session_id="s", prompt="hi", profile="root")
    with pytest.raises(InvalidJobError, match="profile"):
        validate_job(Settings(), job, {})


def test_validate_job_rejects_both_model_and_fields() -> None:
    with pytest.raises(InvalidJobError):
        validate_job(Settings(), PromptJob(session_id="s", prompt="p"), {"prompt": "q"})


@pytest.mark.parametrize("field_name", ["context", "metadata"])
def test_lone_surrogates_are_refused_naming_the_field(field_name: str) -> None:
    fields = {"session_id": "s1", "prompt": "hi", field_name: {"k": "bad \udc80 text"}}
    with pytest.raises(InvalidJobError) as info:
        validate_job(Settings(), None, fields)
    assert f"{field_name}: " in str(info.value)


def test_a_job_that_validates_can_be_prepared() -> None:
    settings = Settings()
    fields = {"session_id": "s1", "prompt": "hi ✓", "metadata": {"k": "ünïcødé"}}
    job = validate_job(settings, None, fields)
    submission = prepare(settings, job)
    assert submission.request.job == job
    assert submission.payload["job"]["metadata"] == {"k": "ünïcødé"}


def test_prepare_builds_a_queued_event_body() -> None:
    settings = Settings()
    job = PromptJob(session_id="s1", prompt="hi", metadata={"ticket": 7}, timeout_s=30)
    submission = prepare(settings, job)
    body = str(RunCalls.from_settings(settings).submit(submission).args[-1])
    envelope = Envelope.from_json('{"seq":1,' + body)
    assert envelope.type is EventType.QUEUED
    assert envelope.run_id == submission.request.run_id
    assert envelope.typed_data() == QueuedData(
        profile="readonly", metadata={"ticket": 7}, prompt="hi"
    )
    assert submission.rq_timeout_s > 30
    assert '"prompt":"hi"' in body  # a replay shows what was asked (issue 17)


# --------------------------------------------------------------------------- Settings


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(redis_host="x")  # type: ignore[call-arg]
    assert "redis_host" in str(info.value)


def test_redis_password_hidden_from_repr_and_redacted_url() -> None:
    settings = Settings(redis_url=REDIS_URL)
    assert settings.redis_url.get_secret_value() == REDIS_URL
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert PASSWORD not in settings.model_dump_json()
    assert PASSWORD not in settings.redis_url_redacted
    assert settings.redis_url_redacted == "redis://default:***@redis.example:6380/2"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        # A lone user part may be a token: hidden whole.
        ("redis://user@host/0", "redis://***@host/0"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("rediss://u:p@host/0?ssl_password=k3y", "rediss://u:***@host/0?ssl_password=***"),
        (
            "rediss://:pw@host:6380/1?ssl_cert_reqs=none",
            "rediss://:***@host:6380/1?ssl_cert_reqs=none",
        ),
        ("redis://u:p%40ss@host", "redis://u:***@host"),
        ("unix://:pw@/tmp/redis.sock?db=1", "unix://:***@/tmp/redis.sock?db=1"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize("password", ["pa#ss", "pa/ss", "pa?ss", "p@ss", "pa:ss"])
def test_redact_url_never_leaks_unescaped_password(password: str) -> None:
    url = f"redis://default:{password}@redis.example:6379/0"
    redacted = redact_url(url)
    assert password not in redacted
    assert redacted == "redis://default:***@redis.example:6379/0"


def test_default_profile_must_exist() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(default_profile="missing")
    assert "missing" in str(info.value)
    with pytest.raises(ValidationError):
        Settings(profiles={"only": PermissionProfile()})  # default "readonly" is gone
    ok = Settings(profiles={"only": PermissionProfile()}, default_profile="only")
    assert ok.default_profile == "only"


def test_settings_read_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_QUEUE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("CLAUDE_QUEUE_QUEUE_NAME", "from-env")
    monkeypatch.setenv("CLAUDE_QUEUE_MAX_LINE_BYTES", "131072")
    monkeypatch.setenv("CLAUDE_QUEUE_EXTRA_ENV", '{"A": "1"}')
    monkeypatch.setenv("QUEUE_NAME", "unprefixed-ignored")
    settings = Settings()
    assert settings.queue_name == "from-env"
    assert settings.max_line_bytes == 131072
    assert settings.extra_env == {"A": "1"}
    assert settings.redis_url == SecretStr(REDIS_URL)
    assert PASSWORD not in repr(settings)


def test_settings_env_values_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_QUEUE_KEY_PREFIX", "bad prefix!")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "key_prefix" in str(info.value)


def test_settings_explicit_value_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_QUEUE_QUEUE_NAME", "from-env")
    assert Settings(queue_name="explicit").queue_name == "explicit"


def test_settings_defaults_without_env() -> None:
    settings = Settings()
    assert settings.queue_name == "claude-queue"
    assert settings.default_profile in settings.profiles
    assert set(settings.profiles) == {"readonly", "ask", "edit", "bash"}
    assert {name for name, p in settings.profiles.items() if p.approval == "ask"} == {"ask"}


# --------------------------------------------------------------------------- Envelope


def test_envelope_round_trip_and_typed_data() -> None:
    finished = FinishedData(
        status=RunStatus.SUCCEEDED, exit_code=0, duration_s=1.25, claude_session_id="c1"
    )
    envelope = Envelope(
        seq=9,
        session_id="s1",
        run_id=RUN_ID,
        ts=1_764_000_000.5,
        type=EventType.FINISHED,
        data=finished.model_dump(mode="json"),
    )
    again = Envelope.from_json(envelope.model_dump_json())
    assert again == envelope
    assert again.is_terminal
    typed = again.typed_data()
    assert isinstance(typed, FinishedData)
    assert typed == finished


def test_envelope_typed_data_rejects_wrong_payload() -> None:
    envelope = Envelope(
        seq=1, session_id="s", run_id=RUN_ID, ts=0.0, type=EventType.FINISHED, data={"x": 1}
    )
    with pytest.raises(ValidationError):
        envelope.typed_data()


@pytest.mark.parametrize(
    "raw",
    [
        '{"seq":0,"session_id":"s","run_id":"r","ts":0,"type":"text","data":{}}',
        '{"seq":1,"session_id":"s","run_id":"r","ts":0,"type":7,"data":{}}',
        '{"seq":1,"session_id":"s","run_id":"r","ts":0,"data":{}}',
    ],
)
def test_envelope_rejects_bad_seq_or_type(raw: str) -> None:
    with pytest.raises(ValidationError):
        Envelope.from_json(raw)


def test_envelope_keeps_a_type_from_a_newer_worker() -> None:
    raw = '{"seq":1,"session_id":"s","run_id":"r","ts":0,"type":"nope","data":{}}'
    assert Envelope.from_json(raw).type == "nope"


def test_envelope_non_terminal() -> None:
    envelope = Envelope(
        seq=2, session_id="s", run_id=RUN_ID, ts=0.0, type=EventType.TEXT, data={"text": "x"}
    )
    assert not envelope.is_terminal


@pytest.mark.parametrize(
    "event",
    [
        Event(
            type=EventType.ERROR,
            data=ErrorData(code=ErrorCode.TIMEOUT, message='quote " and \\ and ü', detail={}),
        ),
        Event(type=EventType.MESSAGE, data=MessageData(role="assistant", content=[])),
        Event(type=EventType.FINISHED, data=FinishedData(status=RunStatus.FAILED, duration_s=2)),
    ],
)
def test_encode_body_with_seq_prefix_is_a_valid_envelope(event: Event) -> None:
    session_id = 'sess"with\\odd'
    body = encode_body(session_id, RUN_ID, 1_764_000_000.123456, event)
    envelope = Envelope.from_json('{"seq":5,' + body)
    assert envelope.seq == 5
    assert envelope.session_id == session_id
    assert envelope.run_id == RUN_ID
    assert envelope.ts == 1_764_000_000.123456
    assert envelope.type is event.type
    assert envelope.typed_data() == event.data
    # the body is one JSON object once the seq is spliced in, and nothing more
    assert json.loads('{"seq":5,' + body)["data"] == event.data.model_dump(mode="json")


def test_unknown_setting_is_named_with_the_closest_known_one() -> None:
    with pytest.raises(SettingsError) as info:
        check_environment_names({"CLAUDE_QUEUE_REDIS_URLL": "redis://x", "HOME": "/root"})
    assert "CLAUDE_QUEUE_REDIS_URLL" in str(info.value)
    assert "did you mean CLAUDE_QUEUE_REDIS_URL?" in str(info.value)


def test_known_and_marker_names_pass_the_environment_check() -> None:
    check_environment_names(
        {"CLAUDE_QUEUE_REDIS_URL": "redis://x", "CLAUDE_QUEUE_RUN_ID": "r", "PATH": "/bin"}
    )


def test_from_environment_refuses_a_typo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_QUEUE_QUEUE_NAEM", "oops")
    with pytest.raises(SettingsError, match="CLAUDE_QUEUE_QUEUE_NAME"):
        Settings.from_environment()


def test_from_environment_names_the_bad_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAUDE_QUEUE_REDIS_URL", "http://u:hunter2@host/0")
    with pytest.raises(SettingsError) as info:
        Settings.from_environment()
    assert "CLAUDE_QUEUE_REDIS_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cwd_roots", ("relative/dir",)),
        ("default_cwd", "relative"),
        ("cli_env_passthrough", ("NOT A NAME",)),
        ("cli_env_passthrough", ("CLAUDE_QUEUE_REDIS_URL",)),
    ],
)
def test_security_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: value})


def test_a_sentinel_deployments_scope_names_its_sentinels_not_only_its_master() -> None:
    def through(*sentinels: str, master: str = "mymaster") -> str:
        return Settings.model_validate(
            {"redis_sentinels": sentinels, "redis_sentinel_master": master}
        ).scope

    ours = through("10.0.0.1:26379", "10.0.0.2:26379")
    assert ours == through("10.0.0.2:26379", "10.0.0.1:26379")  # order is not identity
    assert ours != through("10.0.0.3:26379")  # another deployment, the same master name
    assert ours != through("10.0.0.1:26379", "10.0.0.2:26379", master="other")
    assert ours != Settings().scope
