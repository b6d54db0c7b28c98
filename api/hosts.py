"""The first checks of every request, before any route: the ``Host`` it names, the
browser ``Origin`` it comes from, and the type of the body it posts.

Order (the contract's): Host, then Origin on state-changing methods and websocket
handshakes, then the content type of POST bodies. Each check compares against
configured names only, never against anything else the request says about itself:
a DNS-rebinding page controls the ``Host`` its requests carry, so an Origin compared
with the request's own Host would always match.

``HostGuard`` also records the TCP peer (before the proxy headers rewrite the client)
and whether the request's ``X-Forwarded-For`` was believed, for the rate limiter.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from api.responses import OrjsonResponse
from service.peers import TrustedProxies, is_loopback
from service.settings import Settings, split_list

# Names that reach this machine only. 0.0.0.0 and :: are not names of a host but
# browsers and curl connect to the local machine for them: they count only for a
# client that is on this machine (its TCP peer is loopback).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_ADDRESS_NAMES = frozenset({"0.0.0.0", "::"})
# Probes reach pods by IP, so they name no host (scrapes go to the admin port,
# which has no Host check: api.admin).
UNCHECKED_PATHS = frozenset({"/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Bodies every POST route reads; the push endpoints take what their sender sends too:
# SNS posts text/plain; Firehose always posts application/json (AWS, "HTTP endpoint
# delivery request and response specifications"), already in JSON_TYPES.
JSON_TYPES = frozenset({"application/json", "application/x-ndjson"})
ROUTE_TYPES: dict[str, frozenset[str]] = {"/v1/ingest/sns": frozenset({"text/plain"})}
ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip"})

PEER = "ses_tracker.peer"
FORWARDED = "ses_tracker.forwarded"


def host_name(value: str) -> str | None:
    """The host of a ``Host`` value or an origin's netloc, lower-case, without port
    or brackets (``[::1]:8000`` is ``::1``); None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = (value[1:end], value[end + 1 :]) if end > 0 else ("", "")
    elif value.count(":") > 1:
        return None  # an IPv6 literal must be bracketed
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    name = name.removesuffix(".")  # "localhost." is localhost
    if not name or any(c.isspace() or c in "/@?#\\" for c in name):
        return None
    return name


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which names the service answers to and which origins may change state."""

    hosts: frozenset[str]  # the public URL's host and SES_TRACKER_ALLOWED_HOSTS
    any_host: bool  # SES_TRACKER_ALLOWED_HOSTS has `*`
    origin_hosts: frozenset[str]  # hosts whose origins (any scheme or port) may
    origins: frozenset[str]  # exact origins: the public URL's and ALLOWED_ORIGINS

    @classmethod
    def of(cls, settings: Settings) -> HostPolicy:
        allowed = split_list(settings.allowed_hosts)
        named = {name for entry in allowed if (name := host_name(entry))}
        origins = {_origin(entry) for entry in split_list(settings.allowed_origins)}
        public = urlsplit(settings.public_url or "")
        public_host = host_name(public.netloc) if public.netloc else None
        if public_host:
            origins.add(_origin(settings.public_url or ""))
        return cls(
            hosts=frozenset(named | ({public_host} if public_host else set())),
            any_host="*" in allowed,
            # `*` answers any Host but trusts no origin: a browser page of any site
            # could otherwise change state; name origins in ALLOWED_ORIGINS.
            origin_hosts=frozenset(named),
            origins=frozenset(origins),
        )

    def host_allowed(self, host: str | None, peer_loopback: bool) -> bool:
        if self.any_host:
            return True
        name = host_name(host) if host else None
        return name is not None and (_loopback_name(name, peer_loopback) or name in self.hosts)

    def origin_allowed(self, origin: str, peer_loopback: bool) -> bool:
        """An Origin (a browser's page) that may change state here. Pages served from
        a loopback name are this machine's own (the demo at http://127.0.0.1:8000/)."""
        normal = _origin(origin)
        if normal in self.origins:
            return True
        parts = urlsplit(normal)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file:) and the like
        name = host_name(parts.netloc)
        return name is not None and (
            _loopback_name(name, peer_loopback) or name in self.origin_hosts
        )


def _loopback_name(name: str, peer_loopback: bool) -> bool:
    return name in LOOPBACK_NAMES or (peer_loopback and name in ANY_ADDRESS_NAMES)


def _origin(value: str) -> str:
    """scheme://host[:port], lower-case (both are case-insensitive), no trailing /."""
    parts = urlsplit(value.strip().rstrip("/"))
    if not parts.scheme or not parts.netloc:
        return value.strip().rstrip("/").lower()
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def content_problem(path: str, content_type: str, content_encoding: str) -> str | None:
    """Why a POST body of this type cannot be read on ``path``, or None."""
    media = content_type.split(";", 1)[0].strip().lower()
    wanted = JSON_TYPES | ROUTE_TYPES.get(path, frozenset())
    if media and media not in wanted:
        names = ", ".join(sorted(wanted))
        return f"unsupported Content-Type {media[:80]!r}: send one of {names} (none is JSON)"
    encoding = content_encoding.strip().lower()
    if encoding not in ENCODINGS:
        return f"unsupported Content-Encoding {encoding[:40]!r}: send gzip or none"
    return None


def exposure_problem(settings: Settings) -> str | None:
    """Why ``serve`` must not start on this address, or None: listening beyond this
    machine, it must know which names it answers to."""
    if is_loopback_bind(settings.host) or settings.public_url or settings.allowed_hosts:
        return None
    return (
        f"SES_TRACKER_HOST={settings.host} listens beyond this machine, but neither "
        "SES_TRACKER_PUBLIC_URL nor SES_TRACKER_ALLOWED_HOSTS says which names it answers "
        "to (requests naming any other Host get 400, which guards against DNS rebinding); "
        "set one of them"
    )


def is_loopback_bind(host: str) -> bool:
    """A listen address only this machine reaches."""
    return host.strip().lower() == "localhost" or is_loopback(host.strip())


class HostGuard:
    """ASGI middleware: the Host, Origin and content-type checks, for HTTP and
    websocket alike. ``proxies`` are the peers whose forwarding headers count."""

    def __init__(self, app: ASGIApp, policy: HostPolicy, proxies: TrustedProxies) -> None:
        self.app = app
        self.policy = policy
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else None
        headers = {name: value for name, value in scope["headers"]}
        scope[PEER] = peer
        scope[FORWARDED] = b"x-forwarded-for" in headers and peer in self.proxies
        peer_loopback = is_loopback(peer)
        refusal = self._refusal(scope, headers, peer_loopback)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        response = OrjsonResponse({"error": message}, status_code=status)
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(code=1008)

    def _refusal(
        self, scope: Scope, headers: dict[bytes, bytes], peer_loopback: bool
    ) -> tuple[int, str] | None:
        path = scope["path"]
        if path not in UNCHECKED_PATHS:
            host = headers.get(b"host", b"").decode("latin-1")
            if not self.policy.host_allowed(host, peer_loopback):
                return 400, "this service does not answer to that Host name"
        method = scope.get("method", "GET")
        changes = scope["type"] == "websocket" or method not in SAFE_METHODS
        origin = headers.get(b"origin")
        if (
            changes
            and origin is not None
            and not self.policy.origin_allowed(origin.decode("latin-1"), peer_loopback)
        ):
            return 403, "this origin may not change state here"
        if scope["type"] == "http" and method in BODY_METHODS:
            problem = content_problem(
                path,
                headers.get(b"content-type", b"").decode("latin-1"),
                headers.get(b"content-encoding", b"").decode("latin-1"),
            )
            if problem is not None:
                return 415, problem
        return None
