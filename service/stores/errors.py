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

from redis.exceptions import RedisClusterException, RedisError

REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
# Around one client call only (see above).
REDIS_CALL_FAILED: tuple[type[BaseException], ...] = (
    *REDIS_UNAVAILABLE,
    AttributeError,
    TypeError,
)
