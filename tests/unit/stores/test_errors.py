"""Which Redis failures are poison (never retried) and which an outage (retried)."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from service.stores.redis.errors import BUSY_COOL_DOWN_S, cool_down_s, rejected_by_script

SCRIPT = "script: a81dcb13, on @user_script:595."


@pytest.mark.parametrize(
    "error",
    [
        ResponseError(
            f"WRONGTYPE Operation against a key holding the wrong kind of value {SCRIPT}"
        ),
        ResponseError(f"ERR user_script:12: attempt to index a nil value {SCRIPT}"),
        ResponseError("ERR Error running script (call to f_x): @user_script:3: too many results"),
    ],
)
def test_a_script_error_is_poison(error: Exception) -> None:
    assert rejected_by_script(error)
    assert cool_down_s(error) == 0


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL"),
        BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        ReadOnlyError("READONLY You can't write against a read only replica. script: x"),
        MovedError("3999 127.0.0.1:6381"),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'. script: x"),
        NoScriptError("NOSCRIPT No matching script."),
        ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
        ResponseError("NOREPLICAS Not enough good replicas to write. script: x"),
        RedisConnectionError("Connection closed by server."),
        RedisTimeout("Timeout reading from socket"),
        OSError("connection reset"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ],
)
def test_an_outage_is_not_poison(error: Exception) -> None:
    assert not rejected_by_script(error)


def test_after_a_timeout_or_busy_reply_the_next_call_waits_for_the_script() -> None:
    assert cool_down_s(RedisTimeout("Timeout reading from socket")) == BUSY_COOL_DOWN_S
    assert cool_down_s(TimeoutError()) == BUSY_COOL_DOWN_S
    assert cool_down_s(ResponseError("BUSY Redis is busy running a script.")) == BUSY_COOL_DOWN_S
    assert cool_down_s(RedisConnectionError("refused")) == 0
