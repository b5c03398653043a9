"""One webhook POST, to addresses that were checked.

The URL's host is resolved once; unless private targets are allowed, it is refused
if it is a `localhost` name or if ANY address it resolves to is loopback, private,
link-local, multicast, reserved, unspecified or otherwise not globally routable
(shared.webhooks.address_problem). The POST then connects to those very addresses:
the request URL names the checked IP, while the Host header and TLS (SNI and the
certificate check, through httpcore's `sni_hostname`) keep the URL's host. So a name
cannot resolve to a public address for the check and to an internal one for the
connection (DNS rebinding), for http and https alike.

No proxy from the environment (it would resolve the name itself), no redirects.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from shared.urls import redact_url
from shared.webhooks import address_problem, host_problem, url_problem

Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Addresses tried per attempt, in resolver order, when connecting fails.
MAX_ADDRESSES = 4


class TargetRefused(Exception):
    """The URL may not be contacted (form, or a private/loopback target): never retried."""


class TargetUnreachable(Exception):
    """The host did not resolve, or no address accepted a connection: retried later."""


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL and the checked addresses its host resolved to."""

    url: httpx.URL
    host: str  # ASCII (IDNA) form, without brackets
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"

    @property
    def shown(self) -> str:
        """The URL for logs and error messages (credentials and secret-looking query
        values hidden)."""
        return redact_url(str(self.url))


@dataclass(frozen=True, slots=True)
class Posted:
    """The receiver's answer."""

    status: int
    address: str


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_target(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """Resolve and check a webhook URL; TargetRefused or TargetUnreachable if it cannot be used."""
    problem = url_problem(url)
    if problem is not None:
        raise TargetRefused(f"webhook refused: {problem}")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise TargetRefused(f"webhook refused: the URL cannot be parsed ({exc})") from None
    shown = redact_url(url)
    if not allow_private and (problem := host_problem(host)) is not None:
        raise TargetRefused(f"webhook refused: {shown}: {problem}")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetUnreachable(f"webhook host {host!r} did not resolve: {exc}") from None
    if not addresses:
        raise TargetUnreachable(f"webhook host {host!r} resolved to no address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise TargetRefused(f"webhook refused: {shown}: {host} resolves to {problem}")
    return Target(url=parsed, host=host, addresses=tuple(addresses[:MAX_ADDRESSES]))


def post(
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    verify: ssl.SSLContext | bool = True,
) -> Posted:
    """POST `body` to the first checked address that accepts a connection.

    Only a failure to connect moves on to the next address: once a request may have
    reached a receiver, errors (timeouts, broken answers) propagate as httpx.HTTPError.
    TargetUnreachable if no address accepted the connection.
    """
    sent_headers = {**headers, "Host": target.host_header}
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    failures: list[str] = []
    with httpx.Client(
        timeout=timeout_s, follow_redirects=False, trust_env=False, verify=verify
    ) as client:
        for address in target.addresses:
            request = client.build_request(
                "POST",
                target.url.copy_with(host=address),
                content=body,
                headers=sent_headers,
                extensions=extensions,
            )
            try:
                # Streamed and closed unread: only the status matters, whatever the size.
                response = client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
                continue
            response.close()
            return Posted(status=response.status_code, address=address)
    raise TargetUnreachable(f"could not connect to {target.shown} ({'; '.join(failures)})")
