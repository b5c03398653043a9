"""Webhooks, the pure parts: signatures, which targets are refused, the delivery payload
and body, the job guard's allow-list, and target checks with a given resolver."""

from __future__ import annotations

import ipaddress
import json
import zlib
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.events import Envelope
from shared.jobs import JOB_FUNCTION, WEBHOOK_FUNCTION
from shared.webhooks import (
    EVENT_NAME,
    WebhookDelivery,
    address_problem,
    host_problem,
    literal_address,
    sign,
    submit_refusal,
    summarize,
    verify,
    webhook_body,
)
from worker.jobguard import refusal_reason, stored_call
from worker.webhook_delivery import Target, TargetRefused, TargetUnreachable, check_target

RUN = "a" * 32
OTHER_RUN = "b" * 32
URL = "https://hooks.example.com/claude?token=t0k3n"
# Never used for a command: RQ's Job only insists on having one.
UNUSED_CONNECTION = redis.Redis(host="192.0.2.1")

REFUSED_V4 = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "192.0.2.0/24",
]
REFUSED_V6 = ["::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "::/128", "2001:db8::/32"]


# -- signatures ----------------------------------------------------------------------


def test_signature_matches_the_rfc_4231_hmac_sha256_vector() -> None:
    # RFC 4231, test case 2.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign("Jefe", b"what do ya want for nothing?") == f"sha256={expected}"
    assert sign(b"Jefe", b"what do ya want for nothing?") == f"sha256={expected}"


def test_verify_accepts_only_the_exact_body_and_secret() -> None:
    body = b'{"run_id":"x"}'
    signature = sign("secret", body)
    assert verify("secret", body, signature)
    assert verify("secret", body, f" {signature} ")
    assert not verify("secret", body + b" ", signature)
    assert not verify("other", body, signature)
    assert not verify("secret", body, None)
    assert not verify("secret", body, "")
    assert not verify("secret", body, signature.removeprefix("sha256="))


# -- addresses -----------------------------------------------------------------------


def _in(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(network)
    return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])


refused_v4 = st.sampled_from(REFUSED_V4).flatmap(_in)
refused_v6 = st.sampled_from(REFUSED_V6).flatmap(_in)
public_v4 = st.sampled_from(["8.8.8.0/24", "1.1.1.0/24", "93.184.216.0/24"]).flatmap(_in)


@given(refused_v4)
def test_every_address_of_a_refused_ipv4_range_is_refused(address: Any) -> None:
    assert address_problem(address) is not None
    assert address_problem(str(address)) is not None


@given(refused_v6)
def test_every_address_of_a_refused_ipv6_range_is_refused(address: Any) -> None:
    assert address_problem(address) is not None


@given(refused_v4)
def test_a_refused_ipv4_address_is_refused_in_every_ipv6_spelling(address: Any) -> None:
    value = int(address)
    spellings = [
        f"::ffff:{address}",  # IPv4-mapped
        str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80))),  # 6to4
        str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value)),  # NAT64
    ]
    for spelled in spellings:
        problem = address_problem(spelled)
        assert problem is not None, spelled
        assert "embedded" in problem


@given(public_v4)
def test_public_ipv4_passes_plain_mapped_and_through_nat64(address: Any) -> None:
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    assert address_problem(address) is None
    assert address_problem(f"::ffff:{address}") is None
    assert address_problem(nat64) is None


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to judge, not to bind
        ("::", "unspecified"),
        ("100.64.0.1", "not a globally routable"),
        ("64:ff9b:1::a00:1", "local-use NAT64"),
    ],
)
def test_address_problems_name_the_kind(address: str, kind: str) -> None:
    problem = address_problem(address)
    assert problem is not None
    assert kind in problem


@given(st.integers(0, 2**32 - 1))
def test_numeric_ipv4_forms_are_read_as_the_resolver_reads_them(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    assert literal_address(str(value)) == address  # 2130706433
    assert literal_address(hex(value)) == address  # 0x7f000001
    assert literal_address(str(address)) == address
    assert host_problem(str(value)) == address_problem(address)


@given(st.text(max_size=80))
def test_host_checks_never_raise(host: str) -> None:
    host_problem(host)
    literal_address(host)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://LOCALHOST.:8080/",
        "https://api.localhost/",
        "http://127.0.0.1:9000/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1%25eth0]/",
    ],
)
def test_submit_refuses_loopback_and_private_literals_unless_allowed(url: str) -> None:
    problem = submit_refusal(url, allow_private=False)
    assert problem is not None
    assert "CLAUDE_QUEUE_WEBHOOK_ALLOW_PRIVATE" in problem
    assert submit_refusal(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x", "http://8.8.8.8/", "https://[2001:4860::8888]:8443/"]
)
def test_submit_accepts_public_literals_and_any_name(url: str) -> None:
    assert submit_refusal(url, allow_private=False) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "https://example.com:99999/",
        "https:///nohost",
        "https://exa mple.com/",
        "https://example.com/\x7f",
        "https://example.com/" + "x" * 2048,
    ],
)
def test_submit_refuses_bad_forms_even_when_private_targets_are_allowed(url: str) -> None:
    assert submit_refusal(url, allow_private=True) is not None


# -- target checks with a given resolver ---------------------------------------------


def _resolver(*addresses: str) -> Any:
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def test_a_name_is_refused_if_any_of_its_addresses_is_private() -> None:
    resolver = _resolver("93.184.216.34", "10.0.0.7")
    with pytest.raises(TargetRefused, match=r"resolves to 10\.0\.0\.7 is a private address"):
        check_target(URL, allow_private=False, resolver=resolver)
    assert resolver.asked == [("hooks.example.com", 443)]


def test_allow_private_lets_private_addresses_through() -> None:
    target = check_target(URL, allow_private=True, resolver=_resolver("10.0.0.7"))
    assert target.addresses == ("10.0.0.7",)


def test_a_loopback_name_is_refused_before_any_lookup() -> None:
    def never(host: str, port: int) -> list[str]:
        raise AssertionError(f"resolved {host}:{port}")

    with pytest.raises(TargetRefused, match="loopback name"):
        check_target("http://localhost:8080/", allow_private=False, resolver=never)


def test_a_refusal_hides_the_urls_secrets() -> None:
    with pytest.raises(TargetRefused) as refused:
        check_target(URL, allow_private=False, resolver=_resolver("127.0.0.1"))
    assert "t0k3n" not in str(refused.value)


def test_a_host_that_does_not_resolve_is_unreachable_not_refused() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(TargetUnreachable, match="did not resolve"):
        check_target(URL, allow_private=False, resolver=fails)
    with pytest.raises(TargetUnreachable, match="no address"):
        check_target(URL, allow_private=False, resolver=_resolver())


def test_the_host_header_keeps_the_urls_host_and_explicit_port() -> None:
    resolver = _resolver("93.184.216.34")
    assert check_target(URL, allow_private=False, resolver=resolver).host_header == (
        "hooks.example.com"
    )
    target = check_target("http://bücher.example:8080/", allow_private=False, resolver=resolver)
    assert target.host == "xn--bcher-kva.example"
    assert target.host_header == "xn--bcher-kva.example:8080"
    v6 = check_target("https://[2001:4860::8888]:8443/", allow_private=False, resolver=resolver)
    assert v6.host_header == "[2001:4860::8888]:8443"
    assert isinstance(v6, Target)


# -- the delivery payload and body ---------------------------------------------------


def test_the_delivery_payload_is_strict() -> None:
    delivery = WebhookDelivery(session_id="s1", run_id=RUN, url=URL)
    assert delivery.delivery_id == RUN
    dumped = delivery.model_dump(mode="json")
    assert WebhookDelivery.model_validate(dumped) == delivery
    for bad in (
        {**dumped, "extra": 1},
        {**dumped, "version": 2},
        {**dumped, "run_id": "../x"},
        {**dumped, "session_id": "a b"},
        {**dumped, "url": "https://u:p@example.com/"},
        {**dumped, "url": "file:///etc/passwd"},
    ):
        with pytest.raises(ValidationError):
            WebhookDelivery.model_validate(bad)


def _envelope(seq: int, type_: str, data: dict[str, Any], run_id: str = RUN) -> Envelope:
    return Envelope(seq=seq, session_id="s1", run_id=run_id, ts=1.5 + seq, type=type_, data=data)


def _message(seq: int, text: str, parent: str | None = None) -> Envelope:
    content = [{"type": "text", "text": text}]
    data = {"role": "assistant", "content": content, "parent_tool_use_id": parent}
    return _envelope(seq, "message", data)


FINISHED = {"status": "succeeded", "duration_s": 1.25, "exit_code": 0}


def test_the_summary_takes_the_result_event() -> None:
    usage = {"input_tokens": 3, "output_tokens": 5}
    events = [
        _envelope(1, "queued", {"profile": "readonly"}),
        _message(2, "draft"),
        _envelope(3, "message", {"role": "assistant", "content": []}, run_id=OTHER_RUN),
        _envelope(
            4,
            "result",
            {"is_error": False, "result": "final", "total_cost_usd": 0.5, "usage": usage},
        ),
        _envelope(5, "finished", FINISHED),
    ]
    summary = summarize(RUN, events)
    assert summary is not None
    assert (summary.result, summary.total_cost_usd, summary.usage) == ("final", 0.5, usage)
    assert summary.finished.seq == 5


def test_without_a_result_the_last_top_level_answer_is_the_text() -> None:
    events = [_message(1, "top"), _message(2, "from a subagent", parent="tool-1")]
    summary = summarize(RUN, [*events, _envelope(3, "finished", FINISHED)])
    assert summary is not None
    assert (summary.result, summary.total_cost_usd, summary.usage) == ("top", None, None)


def test_no_summary_without_this_runs_finished() -> None:
    assert summarize(RUN, [_message(1, "x")]) is None
    assert summarize(RUN, [_envelope(1, "finished", FINISHED, run_id=OTHER_RUN)]) is None


def test_the_body_is_canonical_json_of_the_finished_run() -> None:
    delivery = WebhookDelivery(session_id="s1", run_id=RUN, url=URL)
    events = [
        _envelope(1, "result", {"is_error": False, "result": "é"}),
        _envelope(2, "finished", FINISHED),
    ]
    summary = summarize(RUN, events)
    assert summary is not None
    body = webhook_body(delivery, summary)
    assert body == webhook_body(delivery, summary)
    document = json.loads(body)
    assert document["delivery_id"] == RUN
    assert document["event"] == EVENT_NAME
    assert document["status"] == "succeeded"
    assert document["result"] == "é"
    assert document["finished"] == events[1].model_dump(mode="json")
    assert list(document) == sorted(document)


# -- the job guard -------------------------------------------------------------------


def _job(func_name: object, instance: object = None, **fields: bytes) -> Job:
    data = json.dumps([func_name, instance, [{"run_id": RUN}], {}]).encode()
    job = Job("0" * 32, connection=UNUSED_CONNECTION, serializer=JSONSerializer)
    job.restore({b"data": zlib.compress(data), **{k.encode(): v for k, v in fields.items()}})
    return job


def test_the_guard_lets_deliveries_and_runs_through() -> None:
    assert refusal_reason(stored_call(_job(WEBHOOK_FUNCTION))) is None
    assert refusal_reason(stored_call(_job(JOB_FUNCTION))) is None


@pytest.mark.parametrize(
    "func_name",
    ["worker.webhooks.promote_due", "worker.webhooks.enqueue_delivery", f"{WEBHOOK_FUNCTION}2",
     "worker.webhook_delivery.post", "shared.webhooks.sign"],
)  # fmt: skip
def test_other_webhook_functions_are_refused(func_name: str) -> None:
    reason = refusal_reason(stored_call(_job(func_name)))
    assert reason is not None
    assert f"{func_name!r} is not allowed" in reason


def test_a_delivery_with_a_callback_or_an_instance_is_refused() -> None:
    callback = refusal_reason(
        stored_call(_job(WEBHOOK_FUNCTION, failure_callback_name=b"os.system"))
    )
    assert callback is not None
    assert f"function {WEBHOOK_FUNCTION} carries a failure callback 'os.system'" in callback
    instance = refusal_reason(stored_call(_job(WEBHOOK_FUNCTION, instance="x")))
    assert instance is not None
    assert "on an instance" in instance
    hooks = json.dumps([{"url": "http://169.254.169.254/", "job_status": "failed"}]).encode()
    rq_webhook = refusal_reason(stored_call(_job(WEBHOOK_FUNCTION, webhooks=hooks)))
    assert rq_webhook is not None
    assert "1 webhook" in rq_webhook
