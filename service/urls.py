"""URLs the service posts to (chat webhooks, forwarding subscriptions): one rule.

https, or plain http to this machine only (development and tests), and no user or
password in the URL: credentials there end up in proxies' and servers' logs.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def outbound_url(url: str) -> SplitResult:
    """``url`` split, or ValueError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("URL has no host")
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        raise ValueError("URL must be https (http only to localhost)")
    if parts.username or parts.password:
        raise ValueError("URL must not carry a user or password")
    return parts
