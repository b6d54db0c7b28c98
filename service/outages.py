"""Dependency outages, said once.

An expected outage (Redis restarting, a network partition) is no bug: one log line
when a dependency goes away, naming the cause (connection refused, timeout,
authentication, TLS, DNS), one when it is back with how long it was gone, and a
counter meanwhile (``ses_tracker_dependency_failures_total``, with
``ses_tracker_dependency_up``), never a traceback. Every background loop that
meets the dependency reports to the same :data:`OUTAGES`, so a fleet of loops makes
one line, not one per loop per retry.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from redis.exceptions import AuthenticationError
from redis.exceptions import TimeoutError as RedisTimeout

log = structlog.get_logger(__name__)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def cause_of(exc: BaseException) -> str:
    """What an operator should look at first, from the exception and what caused it."""
    for link in _chain(exc):
        if isinstance(link, ssl.SSLError):
            return "tls"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return "dns"
        if isinstance(link, AuthenticationError):
            return "authentication"
        if isinstance(link, TimeoutError | asyncio.TimeoutError | RedisTimeout):
            return "timeout"
    text = " ".join(str(link) for link in _chain(exc)).lower()
    for marks, cause in (
        (("connection refused",), "connection refused"),
        (("noauth", "wrongpass", "invalid password", "authentication"), "authentication"),
        (("ssl", "certificate", "tls"), "tls"),
        (("name or service not known", "nodename nor servname", "getaddrinfo"), "dns"),
        (("timed out", "timeout"), "timeout"),
        (("connection reset", "connection closed", "broken pipe"), "connection lost"),
    ):
        if any(mark in text for mark in marks):
            return cause
    return "unreachable"


@dataclass(slots=True)
class Dependency:
    name: str
    failures: int = 0  # since the process started
    down_since: float | None = None  # monotonic; None while up
    cause: str | None = None

    @property
    def up(self) -> bool:
        return self.down_since is None


class Outages:
    def __init__(self, known: tuple[str, ...] = ()) -> None:
        # The ``known`` ones are reported from the start (up until they fail), so a
        # scrape always has ses_tracker_dependency_up for them to alert on.
        self.dependencies: dict[str, Dependency] = {name: Dependency(name) for name in known}

    def _of(self, name: str) -> Dependency:
        dependency = self.dependencies.get(name)
        if dependency is None:
            dependency = self.dependencies[name] = Dependency(name)
        return dependency

    def failed(self, name: str, exc: BaseException, part: str) -> None:
        """``part`` (the loop that met it) failed to reach ``name``: the first
        failure of an outage is logged, with its cause; the rest are counted."""
        dependency = self._of(name)
        dependency.failures += 1
        if dependency.down_since is not None:
            return
        dependency.down_since = time.monotonic()
        dependency.cause = cause_of(exc)
        log.warning(
            "dependency_down",
            dependency=name,
            cause=dependency.cause,
            noticed_by=part,
            error=f"{type(exc).__name__}: {str(exc)[:300]}",
        )

    def ok(self, name: str) -> None:
        """A call to ``name`` went through: logged when it ends an outage."""
        dependency = self.dependencies.get(name)
        if dependency is None or dependency.down_since is None:
            return
        down_s = time.monotonic() - dependency.down_since
        dependency.down_since, dependency.cause = None, None
        log.info("dependency_back", dependency=name, down_s=round(down_s, 1))


# Process-wide, as the loops that report are (like Prometheus's default registry).
STORE = "store"
OUTAGES = Outages(known=(STORE,))
