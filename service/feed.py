"""The live feed of status transitions, for websockets and anything else that watches.

Without Redis, this process's own merges publish straight into the feed. With
Redis, every replica's merges append to one stream (``merge.lua``) and each replica
follows it with one reader, resuming from its last id after a reconnect: a
transition merged by any replica reaches the watchers of every replica, once.
Subscribers are called synchronously and must not block (they queue and return).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from service.state import Transition
from service.stores import RedisStore, StoreUnavailable

log = structlog.get_logger(__name__)

Subscriber = Callable[[Sequence[Transition]], None]
IDLE_POLL_S = 0.25


class TransitionFeed:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        # Per subscriber, whether it wants transitions now (a broadcaster with no
        # client does not): with nobody wanting them, the Redis follower skips ahead
        # instead of decoding every replica's transitions for no one.
        self._wants: dict[Subscriber, Callable[[], bool]] = {}
        self.published = 0

    def subscribe(self, subscriber: Subscriber, wanted: Callable[[], bool] | None = None) -> None:
        self._subscribers.append(subscriber)
        self._wants[subscriber] = wanted or (lambda: True)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.remove(subscriber)
        self._wants.pop(subscriber, None)

    def wanted(self) -> bool:
        return any(wants() for wants in self._wants.values())

    def publish(self, transitions: Sequence[Transition]) -> None:
        self.published += len(transitions)
        for subscriber in self._subscribers:
            subscriber(transitions)


async def follow_redis(store: RedisStore, feed: TransitionFeed, sleep: Callable) -> None:
    """Publish every transition appended to the Redis stream, until cancelled.

    ``sleep(seconds)`` waits between retries (the runtime passes one that wakes on
    shutdown).
    """
    last: str | None = None
    delay = 0.5
    task = asyncio.current_task()
    while True:
        # redis-py may swallow a cancellation (turning it into a connection error, or
        # retrying the command), so a pending cancel is honoured here, every turn;
        # XREAD blocks for at most a second.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        try:
            if last is None or not feed.wanted():
                # Nobody watching: keep the place, read nothing (a watcher arriving
                # gets what is merged from then on, as it would anyway).
                last = await store.last_transition_id()
                if not feed.wanted():
                    await sleep(IDLE_POLL_S)
                    continue
            last, transitions = await store.follow_transitions(last)
        except StoreUnavailable as exc:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from exc
            log.warning("transition_feed_unavailable", error=str(exc), retry_s=delay)
            await sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        delay = 0.5
        if transitions:
            feed.publish(transitions)
