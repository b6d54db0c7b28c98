"""The live feed of status transitions, for websockets and anything else that watches.

Without Redis, this process's own merges publish straight into the feed. With
Redis, every replica's merges append to one stream (``merge.lua``) and each replica
follows it with one reader, resuming from its last id after a reconnect: a
transition merged by any replica reaches the watchers of every replica, once.
Subscribers are called synchronously and must not block (they queue and return).

An erased recipient leaves the stream too (:func:`erase_transitions`): each entry
naming it is deleted and the rest of its transitions appended again, as a new entry
(field ``t`` as merge.lua writes it, and ``o``, the id of the entry it replaces).
Being new, it reaches the followers that had read the original once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgpack
import structlog
from redis import asyncio as aioredis

from service.outages import OUTAGES, STORE
from service.state import Transition
from service.stores import RedisStore, StoreUnavailable
from service.stores.redis.errors import unavailable

log = structlog.get_logger(__name__)

Subscriber = Callable[[Sequence[Transition]], None]
IDLE_POLL_S = 0.25
# An erasure pages through the stream this many entries at a time.
ERASE_PAGE = 500

# Replace one entry (KEYS[1] the stream; ARGV: its id, the rest of its transitions
# packed, '' for none), only if it is still there: an erasure of another address
# that replaced it first appended its own replacement, met later in the same pass.
_REPLACE_ENTRY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[1], '*', 't', ARGV[2], 'o', ARGV[1])
end
return 1
"""


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
            OUTAGES.failed(STORE, exc, part="transition feed")
            await sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        OUTAGES.ok(STORE)
        delay = 0.5
        if transitions:
            feed.publish(transitions)


async def erase_transitions(client: aioredis.Redis, stream_key: str, address: str) -> int:
    """Remove ``address`` (lower-cased, as stored) from the transitions stream
    ``stream_key`` (one slot group's, on a cluster): each entry naming it is
    deleted and, when it held other transitions, they are appended again (XADD *)
    in the same atomic call. Pages through the stream ``ERASE_PAGE`` entries a
    call; a merge appending meanwhile loses nothing, and the replacements, appended
    at the end, are met again in this pass, naming the address no more. Returns how
    many entries named it."""
    needle = address.encode()
    replace = client.register_script(_REPLACE_ENTRY)
    erased = 0
    after = "-"
    with unavailable("erase"):
        while True:
            rows = await client.xrange(stream_key, min=after, max="+", count=ERASE_PAGE)
            missed = False
            for entry_id, fields in rows:
                raw = fields.get(b"t")
                if raw is None or needle not in raw:
                    continue
                # layout.FED: [message_id, address, from, to, at, latency_ms]; strings
                # read raw and packed back as msgpack str, as merge.lua writes them.
                transitions = msgpack.unpackb(raw, raw=True)
                rest = [t for t in transitions if t[1] != needle]
                if len(rest) == len(transitions):
                    continue  # a near miss (the address inside another)
                packed = msgpack.packb(rest, use_bin_type=False) if rest else b""
                replaced = int(await replace(keys=[stream_key], args=[entry_id, packed]))
                erased += replaced
                missed = missed or not replaced
            # An entry gone since this page was read may have been replaced by another
            # erasure, after this page's end: read on to meet it.
            if len(rows) < ERASE_PAGE and not missed:
                break
            if rows:
                after = f"({rows[-1][0].decode()}"
    if erased:
        log.info("transitions_erased", entries=erased)
    return erased
