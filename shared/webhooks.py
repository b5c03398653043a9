"""Webhooks of finished runs, the pure part: the delivery job's payload, the body that
is POSTed, its signature, and which targets may be contacted. No I/O here: names are
resolved and the POST is made by the worker (worker/webhooks.py).

A run submitted with `webhook` gets one POST once its `finished` is published:

    {"delivery_id": "<run id>", "event": "run.finished", "session_id": ..., "run_id": ...,
     "status": "succeeded", "result": "<final text>", "total_cost_usd": 0.0012,
     "usage": {...}, "num_turns": 1, "finished": <the finished envelope>}

with `X-Claude-Queue-Delivery: <run id>` (the same on every retry: receivers dedupe on
it) and, when a secret is configured, `X-Claude-Queue-Signature: sha256=<hex>`, the
HMAC-SHA256 of the exact body bytes under CLAUDE_QUEUE_WEBHOOK_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.blocks import TextBlock
from shared.events import Envelope, EventType, MessageData, ResultData
from shared.ids import RUN_ID_PATTERN
from shared.jobs import MAX_WEBHOOK_CHARS, SESSION_ID_PATTERN

SIGNATURE_HEADER = "X-Claude-Queue-Signature"
DELIVERY_HEADER = "X-Claude-Queue-Delivery"
EVENT_NAME = "run.finished"
_SIGNATURE_SCHEME = "sha256="

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# The well-known NAT64 prefix, IPv4 address in the last 32 bits (RFC 6052), and the
# local-use one (RFC 8215), which translates to a network's own addresses.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# What inet_aton may read as an IPv4 address: 127.1, 0x7f.1, 2130706433, 017700000001.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")


# -- signatures ----------------------------------------------------------------------


def sign(secret: str | bytes, body: bytes) -> str:
    """The X-Claude-Queue-Signature value of `body`: `sha256=<hex HMAC-SHA256>`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return _SIGNATURE_SCHEME + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, signature: str | None) -> bool:
    """True if `signature` (the header's value) signs exactly `body`; what receivers do."""
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode())


# -- targets -------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's form (scheme, host, credentials), or None."""
    if len(url) > MAX_WEBHOOK_CHARS:
        return f"the URL is longer than {MAX_WEBHOOK_CHARS} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "the URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"the URL cannot be parsed ({exc})"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "the URL must be http:// or https:// with a host"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry credentials"
    return None


def _translated_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or Teredo address tunnels to, if any."""
    if address.sixtofour is not None:
        return address.sixtofour
    return None if address.teredo is None else address.teredo[1]


def address_problem(address: IPAddress | str) -> str | None:
    """Why a webhook must not connect to this address (loopback, private, ...), or None.

    Only globally routable unicast addresses pass; an IPv6 address that embeds an
    IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by that IPv4 address too.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # A mapped or NAT64 address is only another spelling of the IPv4 one (DNS64
        # gives public hosts NAT64 addresses): judged by it alone. A tunnel's endpoint
        # must pass as well as the IPv6 address itself.
        translated = _translated_ipv4(ip)
        tunnelled = _tunnelled_ipv4(ip)
        embedded = translated or tunnelled
        problem = None if embedded is None else address_problem(embedded)
        if problem is not None:
            return f"{problem} (embedded in {ip})"
        if translated is not None:
            return None
        if ip in _NAT64_LOCAL:
            return f"{ip} is a local-use NAT64 address"
    for kind, flagged in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a private", ip.is_private),
        ("a reserved", ip.is_reserved),
        ("not a globally routable", not ip.is_global),
    ):
        if flagged:
            return f"{ip} is {kind} address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host names without any lookup: an IP literal, or a numeric IPv4
    form that name resolution would read as one (`127.1`, `2130706433`); else None."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # parses only: no lookup
        except OSError:
            return None
    return None


def host_problem(host: str) -> str | None:
    """Why a host is refused before any lookup: `localhost` names and non-public IP
    literals; None for anything else (names are judged after resolution)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is a loopback name"
    address = literal_address(name)
    return None if address is None else address_problem(address)


def submit_refusal(url: str, *, allow_private: bool) -> str | None:
    """What a producer can tell at submit time: a bad form, or (unless private targets
    are allowed) a host that is `localhost` or a literal private/loopback address."""
    problem = url_problem(url)
    if problem is not None or allow_private:
        return problem
    host = urlsplit(url).hostname or ""
    problem = host_problem(host)
    if problem is None:
        return None
    return f"{problem}; private and loopback targets need CLAUDE_QUEUE_WEBHOOK_ALLOW_PRIVATE"


# -- the delivery job ----------------------------------------------------------------


class WebhookDelivery(BaseModel):
    """The payload of a delivery job: which run's `finished` to POST, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    run_id: str = Field(pattern=RUN_ID_PATTERN)
    url: str = Field(max_length=MAX_WEBHOOK_CHARS)

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str) -> str:
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def delivery_id(self) -> str:
        """Stable across retries and re-enqueues: the run's id."""
        return self.run_id


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a webhook reports of a run, collected from its events."""

    finished: Envelope
    result: str
    total_cost_usd: float | None
    usage: dict[str, Any] | None
    num_turns: int | None


def summarize(run_id: str, envelopes: Iterable[Envelope]) -> RunSummary | None:
    """The summary of a run from its session's events in order; None without `finished`.

    The text is the last `result` event's, else the last top-level assistant message's
    (as RunHandle.result() reads it).
    """
    result: ResultData | None = None
    answer: MessageData | None = None
    finished: Envelope | None = None
    for envelope in envelopes:
        if envelope.run_id != run_id:
            continue
        if envelope.type is EventType.FINISHED:
            finished = envelope
            continue
        if envelope.type not in (EventType.RESULT, EventType.MESSAGE):
            continue
        try:
            data = envelope.typed_data()
        except ValidationError:  # reshaped by a newer worker: not readable here
            continue
        if isinstance(data, ResultData):
            result = data
        elif isinstance(data, MessageData) and data.role == "assistant":
            answer = data if data.parent_tool_use_id is None else answer
    if finished is None:
        return None
    if result is not None and result.result is not None:
        text = result.result
    elif answer is not None:
        text = "".join(b.text for b in answer.content if isinstance(b, TextBlock))
    else:
        text = ""
    return RunSummary(
        finished=finished,
        result=text,
        total_cost_usd=None if result is None else result.total_cost_usd,
        usage=None if result is None else result.usage,
        num_turns=None if result is None else result.num_turns,
    )


def webhook_body(delivery: WebhookDelivery, summary: RunSummary) -> bytes:
    """The POST body: canonical JSON, so every attempt sends (and signs) the same bytes."""
    document = {
        "delivery_id": delivery.delivery_id,
        "event": EVENT_NAME,
        "session_id": delivery.session_id,
        "run_id": delivery.run_id,
        "status": summary.finished.data.get("status"),
        "result": summary.result,
        "total_cost_usd": summary.total_cost_usd,
        "usage": summary.usage,
        "num_turns": summary.num_turns,
        "finished": summary.finished.model_dump(mode="json"),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
