"""What a Redis client raises when Redis cannot answer, for callers to turn into
``StoreUnavailable`` (retry later) rather than crash on.

redis-py's cluster client raises ``RedisClusterException`` (not a ``RedisError``)
when no node answers or a slot has no master, as during a failover; and its asyncio
connections leak ``AttributeError``/``TypeError`` when writing to a connection the
peer has closed (redis-py issue #4287, seen here when a cluster master is killed).
The last two are caught only around a single client call, where the caller's own
code raises neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeout

from service.stores.base import MergeRejected, StoreUnavailable

REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
# Around one client call only (see above).
REDIS_CALL_FAILED: tuple[type[BaseException], ...] = (
    *REDIS_UNAVAILABLE,
    AttributeError,
    TypeError,
)

# Replies that say Redis cannot take the call now, whatever it holds: retried.
_PASSING = (
    AskError,  # MOVED too
    ClusterDownError,  # MASTERDOWN too
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
_PASSING_CODES = (
    "BUSY",
    "LOADING",
    "READONLY",
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "OOM",
    "NOREPLICAS",
    "NOPERM",
    "NOSCRIPT",
    "UNKILLABLE",
)
# How long to leave Redis before sending a call again after one that may still run
# there: a call timed out on the client, or Redis answered BUSY (another script ran
# past busy-reply-threshold). Redis's own threshold is 5 s.
BUSY_COOL_DOWN_S = 5.0


def rejected_by_script(exc: BaseException) -> bool:
    """A script error that running the same call again reproduces (WRONGTYPE inside
    the script, a Lua runtime error): poison, never an outage. Anything else a merge
    can raise (connections, timeouts, the replies above) is an outage."""
    if not isinstance(exc, ResponseError) or isinstance(exc, _PASSING):
        return False
    text = str(exc)
    if text.split(" ", 1)[0].upper() in _PASSING_CODES:
        return False
    return "script" in text


def cool_down_s(exc: BaseException) -> float:
    """How long to wait before a call again, after ``exc`` (0: the usual backoff)."""
    if isinstance(exc, RedisTimeout | TimeoutError):
        return BUSY_COOL_DOWN_S
    if isinstance(exc, ResponseError) and str(exc).upper().startswith("BUSY"):
        return BUSY_COOL_DOWN_S
    return 0.0


@contextmanager
def unavailable(what: str, *, one_call: bool = False, scripts: bool = False) -> Iterator[None]:
    """The one mapping of what a Redis client raises for an outage to
    ``StoreUnavailable`` (retry later; nothing was lost), as httpx maps its
    transport's errors once: ``with unavailable("read"): ...``.

    ``one_call``: the block is a single client call, where the client's own
    ``AttributeError``/``TypeError`` on a dead connection mean an outage too (the
    module docstring); around more code they would hide a bug. ``scripts``: the
    block runs scripts whose errors on what they were given are poison
    (:func:`rejected_by_script`), raised as ``MergeRejected``, not retried."""
    caught = REDIS_CALL_FAILED if one_call else REDIS_UNAVAILABLE
    try:
        yield
    except caught as exc:
        if scripts and rejected_by_script(exc):
            raise MergeRejected(f"redis refused the {what}: {str(exc)[:300]}") from exc
        raise StoreUnavailable(
            f"redis {what} failed: {type(exc).__name__}: {str(exc)[:300]}",
            retry_after_s=cool_down_s(exc),
        ) from exc
