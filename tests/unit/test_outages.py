"""An outage is said once: one line down (with its cause), one back, a counter."""

from __future__ import annotations

import socket
import ssl

from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout
from structlog.testing import capture_logs

from service.outages import Outages, cause_of
from service.stores.base import StoreUnavailable


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    try:
        raise exc from cause
    except BaseException as raised:
        return raised


def test_the_cause_is_named_from_the_error_and_what_raised_it() -> None:
    refused = RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    assert cause_of(refused) == "connection refused"
    assert cause_of(_caused(StoreUnavailable("redis read failed"), refused)) == (
        "connection refused"
    )
    assert cause_of(_caused(StoreUnavailable("x"), ConnectionRefusedError(111, "no"))) == (
        "connection refused"
    )
    assert cause_of(AuthenticationError("invalid username-password pair")) == "authentication"
    assert cause_of(RedisConnectionError("NOAUTH Authentication required.")) == "authentication"
    assert cause_of(_caused(StoreUnavailable("x"), ssl.SSLError("bad handshake"))) == "tls"
    assert cause_of(_caused(StoreUnavailable("x"), socket.gaierror(-2, "unknown"))) == "dns"
    assert cause_of(RedisTimeout("Timeout reading from socket")) == "timeout"
    assert cause_of(RedisConnectionError("Connection reset by peer")) == "connection lost"
    assert cause_of(RuntimeError("?")) == "unreachable"


def test_an_outage_is_one_line_down_and_one_back_whoever_meets_it() -> None:
    outages = Outages()
    refused = RedisConnectionError("Connection refused")
    with capture_logs() as logs:
        for part in ("alert evaluator", "projection", "erasures", "projection"):
            outages.failed("store", refused, part=part)
        assert not outages.dependencies["store"].up
        outages.ok("store")
        outages.ok("store")  # up already: nothing to say
    assert [(line["event"], line.get("cause")) for line in logs] == [
        ("dependency_down", "connection refused"),
        ("dependency_back", None),
    ]
    assert logs[0]["noticed_by"] == "alert evaluator"
    assert outages.dependencies["store"].failures == 4 and outages.dependencies["store"].up
