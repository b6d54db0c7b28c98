"""The one way out: every webhook POST the service makes (alerts, forwarding).

A receiver is outside our control, so each post is bounded on every side:

* **The reply.** Streamed, and at most ``MAX_REPLY_BYTES`` of its body read (never
  decoded: a gzip bomb stays compressed); the status and headers are the answer. A
  receiver replying 1 GiB costs the 4 KiB kept and httpcore's 64 KiB reads.
* **The time.** One deadline per post, from name resolution through connect, write
  and the reply (httpx's own timeouts are per operation: a receiver dripping a byte a
  second would never trip them). Forwarding keeps it below its lease.
* **The environment.** ``trust_env=False`` (no ``.netrc`` credentials sent to a
  receiver, no ``SSL_CERT_DIR``/``ALL_PROXY`` surprises); the proxy and CA are read
  explicitly from ``HTTPS_PROXY``, ``NO_PROXY`` and ``SSL_CERT_FILE``, as the contract
  says.
* **The destination.** Direct connections go through :class:`VettingBackend`: the
  host is resolved once, every address vetted (``service.forward.egress``), and the
  socket opened to a vetted address, while TLS still verifies (and SNI names) the
  URL's host and the ``Host`` header is the URL's. A name that rebinds between a
  check and a connect cannot, because there is no second look-up. Through a proxy
  the proxy connects; the name is vetted here when it resolves, and the proxy's own
  egress rules are the backstop.

Transport errors are mapped to :class:`OutboundFailed` in one place (:meth:`post`),
and ``Retry-After`` and the shared backoff live here too; what counts as final (a
4xx for an alert, nothing for forwarding) stays with each caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import random
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from service.forward.egress import EgressRefused, check_destination, vet

MAX_REPLY_BYTES = 4 * 1024
DEADLINE_S = 10.0

SIGNATURE_HEADER = "X-SES-Tracker-Signature"
TIMESTAMP_HEADER = "X-SES-Tracker-Timestamp"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a receiver answered: its status, its ``Retry-After`` (seconds) and the
    first ``MAX_REPLY_BYTES`` of its body, which callers must not log (a sink may
    echo the request, secrets included)."""

    status: int
    retry_after_s: float | None
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status < 300


class OutboundFailed(Exception):
    """No answer: a network failure, the deadline, or a refused destination. The
    message is short and URL-free (a webhook URL is a credential)."""


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds to wait: either form the header may take."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def backoff_s(
    attempt: int,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    retry_after_cap_s: float = 3_600.0,
) -> float:
    """Exponential backoff with full jitter after the ``attempt``-th failure, never
    sooner than the receiver's ``Retry-After`` (capped: a receiver cannot park a
    sender for a day)."""
    wait = random.uniform(0, min(cap_s, base_s * 2 ** min(max(attempt - 1, 0), 30)))
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, retry_after_cap_s))
    return wait


def sign(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The generic webhook's signature: HMAC-SHA256 over ``<timestamp>.<body>``.

    Sent as ``X-SES-Tracker-Signature: v1=<hex>`` with ``X-SES-Tracker-Timestamp``
    (Unix seconds); a receiver recomputes it, compares in constant time, and
    refuses timestamps more than a few minutes old (replays).
    """
    mac = hmac.new(secret, b"%d." % timestamp_s + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: bytes, timestamp_s: int, body: bytes, signature: str, now_s: int, tolerance_s: int = 300
) -> bool:
    """What a receiver does (and what the tests' receiver does)."""
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp_s, body).encode(), signature.encode())


# -- the environment ---------------------------------------------------------------


def _env(environ: Mapping[str, str], name: str) -> str | None:
    # Both spellings, as curl and every HTTP library read them.
    return environ.get(name) or environ.get(name.lower()) or None


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """``HTTPS_PROXY`` and the ``NO_PROXY`` entries it does not apply to."""

    proxy: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyRoute:
        entries = (_env(environ, "NO_PROXY") or "").split(",")
        return cls(
            _env(environ, "HTTPS_PROXY"),
            tuple(e.strip().lower() for e in entries if e.strip()),
        )

    def proxied(self, host: str) -> bool:
        """Whether a post to ``host`` goes through the proxy (curl's NO_PROXY rules:
        ``*``, a domain and its subdomains with or without a leading dot, an
        address, a CIDR block)."""
        if self.proxy is None:
            return False
        host = host.lower().strip("[]")
        return not any(entry == "*" or _no_proxy_matches(entry, host) for entry in self.no_proxy)


def _no_proxy_matches(entry: str, host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        try:
            return address in ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            return False
    domain = entry.lstrip("*").lstrip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def ssl_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """Verification against ``SSL_CERT_FILE`` when set (a private CA, or a bundle
    with it), else httpx's default (certifi's bundle)."""
    cafile = _env(environ, "SSL_CERT_FILE")
    if cafile is None:
        return httpx.create_ssl_context(verify=True, trust_env=False)
    return ssl.create_default_context(cafile=cafile)


# -- the destination ---------------------------------------------------------------


class VettingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with one change: ``connect_tcp`` resolves the host
    itself, vets every address, and connects to a vetted one. httpcore still hands
    the URL's host to TLS (SNI and certificate check) and httpx still writes it in
    ``Host``, so nothing but the socket's address changes."""

    def __init__(self, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None):
        self._allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = vet(host, await resolve(host, port), self._allow_private)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # vet() never returns an empty list
        raise error

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound posts go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, once."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EgressRefused(f"cannot resolve {host}: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _VettedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, verify: ssl.SSLContext, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        # httpx takes no network backend; its pool does. Same settings, our backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=VettingBackend(allow_private),
        )


class _RoutingTransport(httpx.AsyncBaseTransport):
    """Straight out through the vetting backend, or through ``HTTPS_PROXY`` unless
    ``NO_PROXY`` names the host."""

    def __init__(
        self, verify: ssl.SSLContext, allow_private: bool, route: ProxyRoute, limits: httpx.Limits
    ) -> None:
        self._direct = _VettedTransport(verify, allow_private, limits)
        self._proxied = (
            httpx.AsyncHTTPTransport(
                proxy=route.proxy, verify=verify, trust_env=False, limits=limits
            )
            if route.proxy is not None
            else None
        )
        self._route = route
        self._allow_private = allow_private

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._proxied is not None and self._route.proxied(request.url.host):
            # The proxy connects: vet the name here if it resolves here at all.
            await check_destination(str(request.url), self._allow_private, must_resolve=False)
            return await self._proxied.handle_async_request(request)
        return await self._direct.handle_async_request(request)

    async def aclose(self) -> None:
        await self._direct.aclose()
        if self._proxied is not None:
            await self._proxied.aclose()


def environ_client(
    *,
    allow_private: bool = False,
    timeout_s: float = DEADLINE_S,
    environ: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """An httpx client that reads the environment as the contract says and no
    further (``HTTPS_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``; ``trust_env`` off) and
    connects only to vetted addresses. :class:`Outbound` posts through one; a GET
    elsewhere (SNS certificates) may use one directly."""
    environ = os.environ if environ is None else environ
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    transport = _RoutingTransport(
        ssl_context(environ), allow_private, ProxyRoute.from_environ(environ), limits
    )
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
    )


# -- the post ----------------------------------------------------------------------


class Outbound:
    """Posts bounded as the module says. ``from_environ`` builds the service's;
    ``over(client)`` wraps a plain client (tests, tools), which still gets the
    deadline, the bounded read and an egress check before the post (not the vetted
    connect: its transport is its own)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        allow_private: bool = False,
        vetted: bool = False,
        deadline_s: float = DEADLINE_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._client = client
        self._allow_private = allow_private
        self._vetted = vetted  # the client's transport vets each connection itself
        self.deadline_s = deadline_s
        self.max_reply_bytes = max_reply_bytes

    @classmethod
    def from_environ(
        cls,
        *,
        allow_private: bool = False,
        deadline_s: float = DEADLINE_S,
        environ: Mapping[str, str] | None = None,
    ) -> Outbound:
        # Per-operation timeouts only back up the deadline, which post() enforces.
        client = environ_client(allow_private=allow_private, timeout_s=deadline_s, environ=environ)
        return cls(client, allow_private=allow_private, vetted=True, deadline_s=deadline_s)

    @classmethod
    def over(
        cls,
        client: httpx.AsyncClient,
        *,
        allow_private: bool = False,
        deadline_s: float = DEADLINE_S,
    ) -> Outbound:
        return cls(client, allow_private=allow_private, deadline_s=deadline_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        deadline_s: float | None = None,
    ) -> Reply:
        """POST ``body``; the reply, or :class:`OutboundFailed` when none came
        (every transport error is mapped here, once)."""
        deadline_s = self.deadline_s if deadline_s is None else deadline_s
        # Never a compressed reply: the bounded read does not decode.
        headers = {**headers, "accept-encoding": "identity"}
        status: int | None = None
        retry_after: str | None = None
        body_read = bytearray()
        try:
            async with asyncio.timeout(deadline_s):
                if not self._vetted:
                    await check_destination(url, self._allow_private)
                async with self._client.stream(
                    "POST", url, content=body, headers=headers
                ) as response:
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
                    async for chunk in response.aiter_raw():
                        body_read += chunk[: self.max_reply_bytes - len(body_read)]
                        if len(body_read) >= self.max_reply_bytes:
                            break  # leaving the block closes the connection
        except TimeoutError:
            # The status came and the body dripped: the receiver has answered.
            if status is None:
                raise OutboundFailed(f"no answer within {deadline_s:g} s") from None
        except EgressRefused as exc:
            raise OutboundFailed(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise OutboundFailed(type(exc).__name__) from exc
        assert status is not None
        return Reply(status, retry_after_seconds(retry_after, time.time()), bytes(body_read))
