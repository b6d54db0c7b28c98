"""Redis store: the shared, durable truth when ``SES_TRACKER_REDIS_URL`` is set.

Layout: one string per message, ``<prefix>m:{<handle>}`` (the handle is a 16-character
digest of the message id, see ``service.search.message_handle``; the braces are a
Redis Cluster hash tag), holding the record msgpack-encoded as ``merge.lua``
describes, message id included; one hash per checkpoint, ``<prefix>ckpt:<name>``;
the search indexes that ``merge.lua`` maintains and ``redis_search`` reads. A single compact value
keeps a delivered message at a few hundred bytes whatever the server's
``hash-max-listpack-*`` settings: a hash with event-sized values would fall back
to a hashtable and cost half as much again.

A batch is merged by ``merge.lua`` (loaded once, called by EVALSHA), in one round
trip: a batch larger than ``chunk_events`` is split into several EVALSHAs sent as one
pipeline, so no single script holds Redis for long. Scripts run atomically, so two
processes merging the same message at once lose nothing; and since the merge is
idempotent, a batch retried after an error or a crash does no harm.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Any

import msgpack
from redis import asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, WatchError

from service import state, stats
from service.erasure import erase
from service.search import SearchPage, SearchQuery, message_handle, pages
from service.state import MessageRecord, MessageWrite, Transition
from service.stores import layout
from service.stores.base import (
    PAST_RETENTION_HOLD_S,
    Checkpoint,
    MemoryFigures,
    Store,
    StoreUnavailable,
    SuppressionCursor,
)
from service.stores.keys import DEFAULT_PREFIX, RedisKeys
from service.stores.redis_record import record_from_bytes, record_to_bytes
from service.stores.redis_search import SEND_TIME_BUCKET_MS, IndexReader
from service.suppressions import DEFAULT_DAYS as DEFAULT_SUPPRESSION_DAYS
from service.suppressions import Suppression

# The layout of records, indexes and statistics. A release that changes it raises
# this, and reads every older format (README, Rolling upgrades).
FORMAT_VERSION = 1


class StoreFormatError(RuntimeError):
    """The store holds data in a format newer than this version reads."""


MERGE_SCRIPT = layout.lua_prelude() + (
    resources.files("service.stores").joinpath("merge.lua").read_text()
)


class RedisStore(Store):
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        retention_s: int = 1_209_600,
        prefix: str = DEFAULT_PREFIX,
        chunk_events: int = 2_000,
        feed_window_s: float | None = None,
        forward_keep_s: float | None = None,
        suppression_days: int = DEFAULT_SUPPRESSION_DAYS,
    ) -> None:
        self._client = client
        self._retention_s = str(int(retention_s))
        self._prefix = prefix
        self._keys = RedisKeys(prefix)
        self._chunk_events = chunk_events
        # With a window, each merge appends its transitions to a stream that every
        # replica follows (follow_transitions), kept for that many seconds; without,
        # nothing is appended.
        self._feed_window_ms = None if feed_window_s is None else int(feed_window_s * 1000)
        # With a keep, each merge also appends its transitions to the forwarding
        # outbox (service.forward), kept that long for senders that fall behind.
        self._forward_keep_ms = None if forward_keep_s is None else int(forward_keep_s * 1000)
        self._suppression_keep_s = suppression_days * 86_400
        self._sha: str | None = None
        self._index = IndexReader(client, prefix)
        self._retention_ms = int(retention_s * 1000)

    @classmethod
    def from_url(
        cls, url: str, *, connection: dict[str, Any] | None = None, **kwargs: object
    ) -> RedisStore:
        """``connection``: redis-py arguments beyond the URL (TLS CA, client cert)."""
        client = aioredis.Redis.from_url(url, health_check_interval=30, **(connection or {}))
        return cls(client, **kwargs)  # type: ignore[arg-type]

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool, for other Redis-backed parts (alert state) to share."""
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    def key(self, message_id: str) -> str:
        return self._index.record_key(message_handle(message_id))

    def checkpoint_key(self, name: str) -> str:
        return self._keys.checkpoint(name)

    @property
    def transitions_key(self) -> str:
        return self._keys.transitions

    def stats_key(self, bucket: int) -> str:
        return self._keys.stats(bucket)

    async def merge(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        counting: stats.Counting | None = None,
    ) -> list[Transition]:
        if not writes and checkpoint is None:
            return []
        chunks = _chunks(writes, self._chunk_events)
        calls = []
        for position, chunk in enumerate(chunks):
            last = position == len(chunks) - 1
            calls.append(self._call_args(chunk, checkpoint if last else None, counting))
        try:
            if self._sha is None:
                self._sha = await self._client.script_load(MERGE_SCRIPT)
            try:
                replies = await self._run(calls)
            except NoScriptError:
                # Redis restarted or its script cache was flushed; the merge is
                # idempotent, so running every chunk again is safe.
                self._sha = await self._client.script_load(MERGE_SCRIPT)
                replies = await self._run(calls)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis merge failed: {type(exc).__name__}: {exc}") from exc
        transitions: list[Transition] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            transitions.extend(_transitions(chunk, msgpack.unpackb(reply, raw=False)))
        return transitions

    async def _run(self, calls: list[tuple[list[str], list[str | bytes]]]) -> list[bytes]:
        assert self._sha is not None
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self._client.evalsha(self._sha, len(keys), *keys, *args)]
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute()

    def _call_args(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None,
        counting: stats.Counting | None,
    ) -> tuple[list[str], list[str | bytes]]:
        handles = [message_handle(write.message_id) for write in writes]
        keys = [self._index.record_key(handle) for handle in handles]
        # The writes go as they are: their tuples are the script's arrays (layout).
        batch = list(zip(writes, handles, strict=True))
        packed_checkpoint = b""
        if checkpoint is not None:
            keys.append(self.checkpoint_key(checkpoint.name))
            packed_checkpoint = _pack(dict(checkpoint.positions))
        packed_stats = b""
        if counting is not None:
            keys.append(self._keys.stats_revisions)
            packed_stats = _pack(
                _in_order(
                    layout.STATS,
                    bucket_ttl_s=stats.BUCKET_TTL_S,
                    status_names=list(state.STATUSES),
                    live_cap=stats.LIVE_GROUP_CAP,
                    bucket_prefix=self._keys.stats_prefix,
                    now_bucket=counting.live_bucket,
                    rollup_prefix=self._keys.rollup_prefix,
                    hour_from_ms=counting.from_ms("hour"),
                    hour_keep_s=counting.keep_days("hour") * stats.DAY_S,
                    day_from_ms=counting.from_ms("day"),
                    day_keep_s=counting.keep_days("day") * stats.DAY_S,
                    history_cap=stats.HISTORY_GROUP_CAP,
                    now_s=counting.now_ms // 1000,
                )
            )
        packed_feed = b""
        now_ms = time.time_ns() // 1_000_000
        if self._feed_window_ms is not None:
            keys.append(self.transitions_key)
            packed_feed = _pack(_in_order(layout.FEED, min_id_ms=now_ms - self._feed_window_ms))
        packed_forward = b""
        if self._forward_keep_ms is not None:
            keys.append(self._keys.forward)
            packed_forward = _pack(
                _in_order(layout.FORWARD, min_id_ms=now_ms - self._forward_keep_ms)
            )
        index = _in_order(
            layout.INDEX,
            prefix=self._prefix,
            bucket_ms=SEND_TIME_BUCKET_MS,
            status_names=list(state.STATUSES),
            oldest_live_ms=now_ms - self._retention_ms,
        )
        args = _in_order(
            layout.ARG,
            ttl_s=self._retention_s,
            status_table=state.STATUS_TABLE,
            max_fields=str(state.MAX_RECORD_FIELDS),
            batch=_pack(batch),
            checkpoint=packed_checkpoint,
            stats=packed_stats,
            feed=packed_feed,
            index=_pack(index),
            max_recipients=str(state.MAX_RECIPIENTS),
            max_blob_bytes=str(state.MAX_RECORD_BLOB_BYTES),
            # Replays (nothing counted live) hold messages past the retention briefly.
            hold_s=str(PAST_RETENTION_HOLD_S if counting is not None and not counting.live else 0),
            forward=packed_forward,
            suppress=_pack(
                _in_order(layout.SUPPRESS, keep_s=self._suppression_keep_s, now_ms=now_ms)
            )
            if self._suppression_keep_s
            else b"",
        )
        return keys, args

    async def get(self, message_id: str) -> MessageRecord | None:
        try:
            raw = await self._client.get(self.key(message_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        if raw is None:
            return None
        stored_id, record = record_from_bytes(raw)
        # Two ids sharing a handle (odds ~1e-15) must not answer for each other.
        return record if stored_id == message_id else None

    async def search(self, query: SearchQuery) -> SearchPage:
        try:
            return await self._index.search(query)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc

    async def read_buckets(self, buckets: Sequence[int]) -> list[Counter[str]]:
        return await self._read_hashes([self.stats_key(bucket) for bucket in buckets])

    async def suppression(self, address: str) -> Suppression | None:
        try:
            raw = await self._client.get(self._keys.suppression(address))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        return None if raw is None else _suppression(address, raw)

    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        index = self._keys.suppressions
        high: str | int = "+inf" if after is None else after[0]
        low: str | int = "-inf" if since_ms is None else since_ms
        found: list[Suppression] = []
        offset = 0
        try:
            while len(found) <= limit:
                rows = await self._client.zrevrangebyscore(
                    index, high, low, start=offset, num=_SUPPRESSION_CHUNK, withscores=True
                )
                if not rows:
                    return found, None
                offset += len(rows)
                members = [m.decode() for m, score in rows
                           if after is None or (int(score), m.decode()) < after]  # fmt: skip
                raws = await self._client.mget([self._keys.suppression(m) for m in members])
                gone = [m for m, raw in zip(members, raws, strict=True) if raw is None]
                if gone:
                    await self._client.zrem(index, *gone)
                    offset -= len(gone)
                for member, raw in zip(members, raws, strict=True):
                    if raw is not None:
                        entry = _suppression(member, raw)
                        if reason is None or entry.reason == reason:
                            found.append(entry)
                if len(rows) < _SUPPRESSION_CHUNK:
                    break
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        if len(found) > limit:
            page = found[:limit]
            return page, (page[-1].since_ms, page[-1].address)
        return found, None

    async def remove_suppression(self, address: str) -> bool:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._keys.suppression(address))
                pipe.zrem(self._keys.suppressions, address)
                deleted, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis write failed: {type(exc).__name__}: {exc}") from exc
        return bool(deleted)

    async def erase_recipient(self, address: str) -> int:
        """Each record is rewritten under WATCH, so a merge landing meanwhile is not
        overwritten: the rewrite is retried on the merged record."""
        handles: list[str] = []
        try:
            async for hits in pages(self._index.search, SearchQuery(recipient=address)):
                handles += [message_handle(hit.message_id) for hit in hits]
            erased = 0
            for handle in handles:
                erased += await self._erase_from(self._index.record_key(handle), address)
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._keys.recipient(address), self._keys.suppression(address))
                pipe.zrem(self._keys.suppressions, address)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis erase failed: {type(exc).__name__}: {exc}") from exc
        return erased

    async def _erase_from(self, key: str, address: str) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return 0
                    message_id, record = record_from_bytes(raw)
                    if not erase(record, address):
                        await pipe.unwatch()
                        return 0
                    pipe.multi()
                    pipe.set(key, record_to_bytes(message_id, record), keepttl=True)
                    await pipe.execute()
                    return 1
                except WatchError:
                    continue  # merged meanwhile: erase from the new version

    async def replayed(self, digest: str) -> bool:
        try:
            return bool(await self._client.exists(self._keys.replayed(digest)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc

    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        try:
            await self._client.set(self._keys.replayed(digest), 1, ex=max(1, keep_s))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis write failed: {type(exc).__name__}: {exc}") from exc

    async def read_rollups(self, step: str, starts: Sequence[int]) -> list[Counter[str]]:
        return await self._read_hashes([self._keys.rollup(step, start) for start in starts])

    async def _read_hashes(self, keys: list[str]) -> list[Counter[str]]:
        if not keys:
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        return [
            Counter({field.decode(): int(count) for field, count in reply.items()})
            for reply in replies
        ]

    async def stats_revisions(self) -> stats.Revisions:
        try:
            raw = await self._client.hgetall(self._keys.stats_revisions)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        sequence = int(raw.pop(b"seq", 0))
        return stats.Revisions(sequence, {int(k): int(v) for k, v in raw.items()})

    async def follow_transitions(
        self, after: str = "$", block_ms: int = 1_000
    ) -> tuple[str, list[Transition]]:
        """Transitions appended after stream id ``after`` (waits up to ``block_ms``).

        Returns the id to pass next time, so a follower that reconnects resumes where
        it stopped (within the stream's retained length).
        """
        try:
            reply = await self._client.xread({self.transitions_key: after}, block=block_ms)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        transitions: list[Transition] = []
        last = after
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id.decode()
                for message_id, address, old, new, at, latency in msgpack.unpackb(
                    fields[b"t"], raw=False
                ):  # layout.FED
                    transitions.append(
                        Transition(
                            message_id=message_id,
                            recipient=address,
                            from_status=_status_or_new(old),
                            to_status=state.STATUSES[new],
                            at=int(at),
                            latency_ms=None if latency == _NO_LATENCY else int(latency),
                        )
                    )
        return last, transitions

    async def last_transition_id(self) -> str:
        """The id of the newest stream entry ("0-0" when empty): where to start following."""
        try:
            entries = await self._client.xrevrange(self.transitions_key, count=1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        return entries[0][0].decode() if entries else "0-0"

    async def load_checkpoint(self, name: str) -> dict[str, str]:
        raw = await self._client.hgetall(self.checkpoint_key(name))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def claim_format(self) -> int:
        """Record this version's data format, or find a newer one and refuse it.

        Replicas of two versions may share one Redis during a rolling upgrade while
        they read the same format; a version that finds a newer format than it
        knows (a downgrade past a format change) must not write into it.
        """
        key = self._keys.format
        try:
            await self._client.set(key, FORMAT_VERSION, nx=True)
            stored = int(await self._client.get(key) or FORMAT_VERSION)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis read failed: {type(exc).__name__}") from exc
        if stored > FORMAT_VERSION:
            raise StoreFormatError(
                f"Redis holds ses-tracker data format {stored}; this version reads up to "
                f"{FORMAT_VERSION}: run a newer ses-tracker, or use an empty Redis"
            )
        return stored

    async def memory(self) -> MemoryFigures | None:
        """Redis's used memory, its ``maxmemory`` (0: none) and keys it evicted."""
        try:
            memory = await self._client.info("memory")
            stats = await self._client.info("stats")
        except (RedisError, OSError):
            return None
        limit = int(memory.get("maxmemory", 0))
        return MemoryFigures(
            int(memory.get("used_memory", 0)), limit or None, int(stats.get("evicted_keys", 0))
        )

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:  # readiness is a yes/no; the cause is logged by the caller
            return False

    async def close(self) -> None:
        await self._client.aclose()

    def describe(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        return f"RedisStore({kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)})"


def _chunks(writes: Sequence[MessageWrite], max_events: int) -> list[Sequence[MessageWrite]]:
    chunks: list[Sequence[MessageWrite]] = []
    start, events = 0, 0
    for index, write in enumerate(writes):
        if events and events + len(write.events) > max_events:
            chunks.append(writes[start:index])
            start, events = index, 0
        events += len(write.events)
    chunks.append(writes[start:])
    return chunks


_STRIDE = len(layout.REPLY)
_MESSAGE_INDEX = layout.position(layout.REPLY, "message_index")
_EVENT_INDEX = layout.position(layout.REPLY, "event_index")
_ADDRESS = layout.position(layout.REPLY, "address")
_FROM = layout.position(layout.REPLY, "from_status")
_TO = layout.position(layout.REPLY, "to_status")
_NEW_RECIPIENT = layout.CODES["NEW_RECIPIENT"]
_NO_LATENCY = layout.CODES["NO_LATENCY"]
_DESTINATION_EVENT = layout.CODES["DESTINATION_EVENT"]


def _pack(value: Any) -> bytes:
    # Redis's bundled cmsgpack predates msgpack's bin type: bytes go as str.
    return msgpack.packb(value, use_bin_type=False)


def _in_order(names: tuple[str, ...], **values: Any) -> list[Any]:
    """``values`` as the array ``names`` lays out (every name, no other)."""
    assert values.keys() == set(names), set(names) ^ values.keys()
    return [values[name] for name in names]


def _status_or_new(code: int) -> str | None:
    return None if code == _NEW_RECIPIENT else state.STATUSES[code]


def _transitions(writes: Sequence[MessageWrite], reply: list) -> list[Transition]:
    transitions: list[Transition] = []
    for i in range(0, len(reply), _STRIDE):
        write = writes[reply[i + _MESSAGE_INDEX] - 1]
        event_index = reply[i + _EVENT_INDEX]
        if event_index == _DESTINATION_EVENT:
            at = write.first_at
        else:
            at = write.events[event_index - 1].at
        transitions.append(
            Transition(
                message_id=write.message_id,
                recipient=reply[i + _ADDRESS],
                from_status=_status_or_new(reply[i + _FROM]),
                to_status=state.STATUSES[reply[i + _TO]],
                at=at,
                latency_ms=max(0, at - write.sent_at) if write.sent_known else None,
            )
        )
    return transitions


_SUPPRESSION_CHUNK = 500


def _suppression(address: str, raw: bytes) -> Suppression:
    reason, since_ms, message_id, subtype = msgpack.unpackb(raw, raw=False)  # layout.SUPPRESSION
    return Suppression(address, reason, int(since_ms), message_id, subtype or None)
