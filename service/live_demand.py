"""Whether any process of a fleet has a live page open: the merge writes the live
stream of transitions only then.

The stream (``service.feed``) exists for websockets; with none open anywhere nobody
reads it, yet appending it was about a fifteenth of Redis's work per event
(README, Benchmark). So each process with a live client keeps a flag set in every
slot group (``st:live-watched``, expiring ``WATCH_TTL_MS`` after its last refresh),
and ``merge.lua`` appends only where it finds the flag.

The flag is set *before* a websocket is accepted (:meth:`LiveDemand.announce`), so
whatever any replica merges after a page connected reaches it, as before; the
refresh keeps it while clients stay. A page's first frame is a snapshot, so what
was merged unwatched is not missed by anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from service.outages import OUTAGES, STORE
from service.stores import StoreUnavailable
from service.stores.redis.errors import unavailable
from service.stores.redis.keyspace import RedisKeyspace

# How long a flag outlives its last refresh: a process that dies with pages open
# keeps the stream written this long after it.
WATCH_TTL_MS = 10_000
# How often a process with clients refreshes it (well inside the TTL, so an outage of
# a refresh or two does not drop it).
REFRESH_S = 3.0


class LiveDemand:
    def __init__(
        self,
        keyspace: RedisKeyspace,
        watching: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keyspace = keyspace
        self._watching = watching
        self._clock = clock
        self._announced_at: float | None = None
        # One announcement at a time: a burst of connects writes the flags once.
        self._lock = asyncio.Lock()
        self.announcements = 0

    async def announce(self, *, force: bool = False) -> None:
        """Set the flag in every slot group (unless done within the refresh period,
        ``force`` aside). An outage is said (``service.outages``), not raised: a
        page still opens, and the next refresh sets the flag."""
        async with self._lock:
            now = self._clock()
            fresh = self._announced_at is not None and now - self._announced_at < REFRESH_S
            if fresh and not force:
                return
            client = self._keyspace.client
            try:
                with unavailable("live demand"):
                    await asyncio.gather(
                        *(
                            client.set(group.live_watched, b"1", px=WATCH_TTL_MS)
                            for group in self._keyspace.groups
                        )
                    )
            except StoreUnavailable as exc:
                OUTAGES.failed(STORE, exc, part="live demand")
                return
            OUTAGES.ok(STORE)
            self._announced_at = now
            self.announcements += 1

    async def run(self, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        """Refresh the flag while this process has live clients, until cancelled."""
        while True:
            if self._watching():
                await self.announce(force=True)
            await sleep(REFRESH_S)
