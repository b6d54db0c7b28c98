"""Recently seen ids (SNS MessageId, Firehose requestId), to skip retried deliveries.

Merging is idempotent, so a duplicate that slips through (another replica, or an id
older than the window) costs work, never correctness.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentIds:
    def __init__(
        self,
        *,
        max_ids: int = 100_000,
        ttl_s: float = 3_600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._max_ids = max_ids
        self._ttl_s = ttl_s
        self._clock = clock

    def seen(self, key: str) -> bool:
        expires = self._ids.get(key)
        return expires is not None and expires > self._clock()

    def add(self, key: str) -> None:
        now = self._clock()
        self._ids[key] = now + self._ttl_s
        self._ids.move_to_end(key)
        while self._ids:
            oldest, expires = next(iter(self._ids.items()))
            if expires > now and len(self._ids) <= self._max_ids:
                break
            del self._ids[oldest]
