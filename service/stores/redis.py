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
trip: a batch whose work is over one call's budget (``service.stores.merge_cost``)
is split into several EVALSHAs sent as one pipeline, so no single script holds
Redis for long. Scripts run atomically, so two
processes merging the same message at once lose nothing; and since the merge is
idempotent, a batch retried after an error or a crash does no harm.

On a Redis Cluster (``slot_groups``, see ``service.stores.slots``) every key above
exists once per slot group, under the group's hash-tagged prefix; a batch is split
by group, one EVALSHA per group (and chunk), all sent at once, each to its group's
master. The parts commit independently, which is safe for the same two reasons: a
part that failed is retried with the whole batch (the parts that committed merge
again to the same records and count nothing twice), and every group's part carries
its own copy of the checkpoint, atomically, while a source resumes from the lowest
copy, so it is never ahead of what any group holds, even after a failover that lost
a group's last writes.
Readers merge the groups: search pages, statistics buckets and rollups (summed),
suppressions, the transitions stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException

from service import state, stats, tombstones
from service.erasure import erase
from service.history import Fields
from service.search import SCAN_BUDGET, SearchPage, SearchQuery, message_handle
from service.state import MessageRecord, MessageWrite, Transition
from service.stores import changelog, layout, lease, merge_cost, migrations, rollup_cache
from service.stores.base import (
    PAST_RETENTION_HOLD_S,
    Checkpoint,
    MemoryFigures,
    MergeRejected,
    Store,
    StoreUnavailable,
    SuppressionCursor,
)
from service.stores.errors import (
    REDIS_UNAVAILABLE,
    unavailable,
)
from service.stores.keys import DEFAULT_PREFIX, RedisKeys
from service.stores.keyspace import Client, RedisKeyspace
from service.stores.projection import LOG_KEEP_S, StatsProjection
from service.stores.redis_record import record_from_bytes, record_to_bytes
from service.stores.redis_search import SEND_TIME_BUCKET_MS, IndexReader, search_groups
from service.stores.slots import (
    group_of,
    merge_pages,
    poll_groups,
)
from service.suppressions import DEFAULT_DAYS as DEFAULT_SUPPRESSION_DAYS
from service.suppressions import REASONS as SUPPRESSION_REASONS
from service.suppressions import Suppression

log = structlog.get_logger(__name__)

# The layout of records, indexes and statistics. A release that changes it raises
# this and ships the step from the format before (service.stores.migrations; README,
# Rolling upgrades). 2: every key family in a namespace of its own.
FORMAT_VERSION = 2


class StoreFormatError(RuntimeError):
    """The store holds data in a format newer than this version reads."""


class StoreLayoutError(StoreFormatError):
    """The store holds data laid out in another number of slot groups (or none)."""


_MERGE_BODY = resources.files("service.stores").joinpath("merge.lua").read_text()
MERGE_SCRIPT = layout.lua_prelude(_MERGE_BODY) + _MERGE_BODY

# An erasure's step on one record (KEYS: the record, the address's index; ARGV: the
# record as read or '' for none, its rewrite or '' for none, its handle, '1' to
# delete it instead): only if the record is still what was read (a merge may have
# landed), the rewrite and the index entry's removal together. 0: changed
# meanwhile, read again.
_ERASE_RECORD = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
elseif ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# An erased address's suppression (KEYS: it, the listing, one listing per reason;
# ARGV: the address).
_FORGET_SUPPRESSION = """
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
"""

# A tombstone keeps the later of two erasure times.
_KEEP_LATER = """
local kept = math.max(tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'), tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], ARGV[1], string.format("%d", kept))
return kept
"""

# merge.lua's answer when the tombstones changed since the caller read them.
_STALE_ERASURES = msgpack.packb([layout.STALE_ERASURES])
# Strip and send again at most this often before giving up for now (an erasure a
# merge call, every call: the caller retries the batch later).
ERASURE_RETRIES = 5

_RAISE_FORMAT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""


@dataclass(frozen=True, slots=True)
class SlotGroup:
    """One group's keys and index reader (``service.stores.slots``)."""

    number: int
    keys: RedisKeys
    index: IndexReader


class RedisStore(Store):
    """``slot_groups``: ``None`` for one Redis (the plain layout), else the number of
    slot groups the keyspace is split into (a Redis Cluster; fixed for the data's
    life)."""

    def __init__(
        self,
        keyspace: RedisKeyspace | Client,
        *,
        slot_groups: int | None = None,
        scan_budget: int = SCAN_BUDGET,
        retention_s: int = 1_209_600,
        prefix: str = DEFAULT_PREFIX,
        call_budget: int = merge_cost.DEFAULT_BUDGET,
        feed_window_s: float | None = None,
        feed_when_watched: bool = False,
        forward_keep_s: float | None = None,
        suppression_days: int = DEFAULT_SUPPRESSION_DAYS,
        project_inline: bool = True,
    ) -> None:
        """``keyspace``: where the data lives (a bare client: under ``prefix``, in
        ``slot_groups``, which a keyspace carries itself)."""
        if not isinstance(keyspace, RedisKeyspace):
            keyspace = RedisKeyspace.of(keyspace, prefix=prefix, slot_groups=slot_groups)
        self.keyspace = keyspace
        client = self._client = keyspace.client
        # Inline, each merge applies the change log of its slot groups before
        # returning, where this process holds (or finds free) their projection's
        # lease, so what a merge counted is visible when it returns; the lease
        # holder's sweep (``projection.run_forever``, which serve runs) applies what
        # the others merged. Off, only the sweep applies the log.
        self._project_inline = project_inline
        self._retention_s = str(int(retention_s))
        self._keys = keyspace.keys
        # Units of script work one merge call may take (service.stores.merge_cost).
        self._call_budget = call_budget
        # With a window, each merge appends its transitions to a stream that every
        # replica follows (follow_transitions), kept for that many seconds; without,
        # nothing is appended.
        self._feed_window_ms = None if feed_window_s is None else int(feed_window_s * 1000)
        # And with ``feed_when_watched``, only while some process has a live page open
        # (its flag, service.live_demand): what serve runs. Nobody reads the stream
        # otherwise, and writing it was about a fifteenth of Redis's work per event.
        self._feed_when_watched = feed_when_watched
        # With a keep, each merge also appends its transitions to the forwarding
        # outbox (service.forward), kept that long for senders that fall behind.
        self._forward_keep_ms = None if forward_keep_s is None else int(forward_keep_s * 1000)
        self._suppression_keep_s = suppression_days * 86_400
        self._sha: str | None = None
        self._retention_ms = int(retention_s * 1000)
        # A page's candidates are shared out between the groups searched at once.
        budget = -(-scan_budget // len(keyspace.groups))
        self._groups = [
            SlotGroup(number, keys, IndexReader(client, keys.prefix, budget))
            for number, keys in enumerate(keyspace.groups)
        ]
        self._erase_record = client.register_script(_ERASE_RECORD)
        self._forget_suppression = client.register_script(_FORGET_SUPPRESSION)
        self._keep_later = client.register_script(_KEEP_LATER)
        self._hold_lease = client.register_script(lease.TAKE_OR_RENEW)
        # The tombstones as last read (service.tombstones); None: read at next use.
        self._tombstones: tombstones.Tombstones | None = None
        # Merge calls sent again because an erasure changed the tombstones meanwhile.
        self.stale_erasure_calls = 0
        # Each group's hash slot (its prefix holds the tag).
        self._slots = [key_slot(group.keys.prefix.encode()) for group in self._groups]
        # Per group: index entries that may be dead, for its next call to check.
        self._trims: list[dict[tuple[str, str], str]] = [{} for _ in self._groups]
        # The slot groups' sequences last seen (stats_revisions), to notice one going back.
        self._sequences: list[int] = [0] * len(self._groups)
        # Listing rows read by suppression pages, and history's reads by kind (tests
        # count the work, not the time).
        self.suppression_rows_read = 0
        self.rollup_reads: Counter[str] = Counter()
        self._closed = rollup_cache.ClosedPeriods()
        # Statistics are a projection of the change log each merge appends to.
        self.projection = StatsProjection(
            client, [group.keys for group in self._groups], self._run_script
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        slot_groups: int | None = None,
        connection: dict[str, Any] | None = None,
        prefix: str = DEFAULT_PREFIX,
        **kwargs: object,
    ) -> RedisStore:
        """A store on a keyspace of its own (``RedisKeyspace.connect``)."""
        keyspace = RedisKeyspace.connect(
            url, cluster=cluster, slot_groups=slot_groups, prefix=prefix, connection=connection
        )
        return cls(keyspace, **kwargs)  # type: ignore[arg-type]

    @property
    def cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    @property
    def slot_groups(self) -> list[SlotGroup]:
        return list(self._groups)

    def slot_group(self, message_id: str) -> SlotGroup:
        handle = message_handle(message_id)
        return self._groups[group_of(handle, len(self._groups))]

    def key(self, message_id: str) -> str:
        return self.slot_group(message_id).keys.record(message_handle(message_id))

    @property
    def transitions_keys(self) -> list[str]:
        return [group.keys.transitions for group in self._groups]

    def stats_keys(self, bucket: int) -> list[str]:
        return [group.keys.stats(bucket) for group in self._groups]

    async def merge(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        counting: stats.Counting | None = None,
    ) -> list[Transition]:
        if not writes and checkpoint is None:
            return []
        with unavailable("merge", one_call=True, scripts=True):
            view = self._tombstones or await self._load_tombstones()
            self._tombstones = view
        writes = view.strip(writes)
        chunks: list[Sequence[MessageWrite]] = []
        numbers: list[int] = []
        costs: list[int] = []
        calls = []
        parts: list[tuple[SlotGroup, Checkpoint | None]] = []
        # The checkpoint rides in the last script of every group, atomically with that
        # group's part (a group with no message of the batch gets a script of its own
        # for it), so each group's copy says what that group holds durably.
        for group, group_writes in self._by_group(writes, every=checkpoint is not None):
            group_calls = merge_cost.cut(group_writes, self._call_budget)
            for position, (chunk, cost) in enumerate(group_calls):
                last = position == len(group_calls) - 1
                chunks.append(chunk)
                numbers.append(group.number)
                costs.append(cost)
                parts.append((group, checkpoint if last else None))
                calls.append(self._call_args(group, chunk, parts[-1][1], counting, view))
        replies: list[bytes] = []
        with unavailable("merge", one_call=True, scripts=True):
            if calls:
                if self._sha is None:
                    self._sha = await self._client.script_load(MERGE_SCRIPT)
                try:
                    replies = await self._run_in_round_trips(calls, numbers, costs)
                except NoScriptError:
                    # Redis restarted, failed over or flushed its script cache; the
                    # merge is idempotent, so running every chunk again is safe.
                    self._sha = await self._client.script_load(MERGE_SCRIPT)
                    replies = await self._run_in_round_trips(calls, numbers, costs)
            for _ in range(ERASURE_RETRIES):
                stale = [n for n, reply in enumerate(replies) if reply == _STALE_ERASURES]
                if not stale:
                    break
                self.stale_erasure_calls += len(stale)
                # Another process erased an address since the view was read: those
                # calls wrote nothing; strip them again against the new tombstones.
                view = self._tombstones = await self._load_tombstones()
                for n in stale:
                    chunks[n] = view.strip(chunks[n])
                    calls[n] = self._call_args(parts[n][0], chunks[n], parts[n][1], counting, view)
                again = await self._run_in_round_trips(
                    [calls[n] for n in stale],
                    [numbers[n] for n in stale],
                    [costs[n] for n in stale],
                )
                for n, reply in zip(stale, again, strict=True):
                    replies[n] = reply
            if any(reply == _STALE_ERASURES for reply in replies):
                raise StoreUnavailable("erasures kept changing the tombstones", retry_after_s=1.0)
        transitions: list[Transition] = []
        refused: dict[str, str] = {}
        for chunk, number, reply in zip(chunks, numbers, replies, strict=True):
            changes, candidates, refusals = msgpack.unpackb(reply, raw=False)
            transitions.extend(_transitions(chunk, changes))
            self._note_trims(number, candidates)
            for at in range(0, len(refusals), 2):
                position, error = refusals[at : at + 2]
                refused[chunk[position - 1].message_id] = str(error)[:300]
        if counting is not None and self._project_inline:
            await self._project(set(numbers))
        if refused:
            raise MergeRejected(
                f"redis refused {len(refused)} message(s)", refused=refused, merged=transitions
            )
        return transitions

    async def _project(self, numbers: Collection[int]) -> None:
        """Apply the change log of the groups just merged (where this process holds,
        or finds free, their projection's lease), so statistics are visible when
        the merge returns. The merge is durable already: a failure here leaves the
        entries to the lease holder's sweep (``StatsProjection.run_forever``)."""
        for number in sorted(numbers):
            try:
                await self.projection.catch_up(number)
            except StoreUnavailable as exc:
                log.warning("projection_deferred", error=str(exc)[:300])
                return

    async def project(self) -> int:
        """Apply every group's change log now, lease or not; how many entries were
        (for tools and tests that need statistics settled)."""
        applied = 0
        for number in range(len(self._groups)):
            applied += await self.projection.catch_up(number, force=True)
        return applied

    async def _run_script(self, number: int, sha: str, keys: list[Any], args: list[Any]) -> Any:
        """One script call to group ``number``'s node (its master, on a cluster): the
        merge's calls and the projection's go through here."""
        if isinstance(self._client, RedisCluster):
            return await self._client.execute_command(
                "EVALSHA", sha, len(keys), *keys, *args, **self._master_of(number)
            )
        return await self._client.evalsha(sha, len(keys), *keys, *args)

    def _by_group(
        self, writes: Sequence[MessageWrite], every: bool
    ) -> list[tuple[SlotGroup, Sequence[MessageWrite]]]:
        """The batch's part in each group that has one (``every``: in every group)."""
        if len(self._groups) == 1:
            return [(self._groups[0], writes)]
        parts: dict[int, list[MessageWrite]] = {}
        if every:
            parts = {number: [] for number in range(len(self._groups))}
        for write in writes:
            parts.setdefault(self.slot_group(write.message_id).number, []).append(write)
        return [(self._groups[number], part) for number, part in sorted(parts.items())]

    async def _run_in_round_trips(
        self, calls: list[tuple[list[str], list[str | bytes]]], numbers: list[int], costs: list[int]
    ) -> list[bytes]:
        """Calls sent a round trip at a time, each of at most ROUND_TRIP_BUDGET units:
        the client gives a command's write and read a few seconds (redis-py's socket
        timeout), and a pipeline Redis needs longer to work through would time out
        though every call in it was short."""
        replies: list[bytes] = []
        start = 0
        while start < len(calls):
            end, spent = start + 1, costs[start]
            while end < len(calls) and spent + costs[end] <= merge_cost.ROUND_TRIP_BUDGET:
                spent += costs[end]
                end += 1
            replies.extend(await self._run(calls[start:end], numbers[start:end]))
            start = end
        return replies

    async def _run(
        self, calls: list[tuple[list[str], list[str | bytes]]], numbers: list[int]
    ) -> list[bytes]:
        sha = self._sha
        assert sha is not None
        if isinstance(self._client, RedisCluster) or len(calls) == 1:
            # redis-py's cluster pipeline refuses scripts; on a cluster each call
            # goes to its group's master on its own connection, all at once.
            return await asyncio.gather(
                *(
                    self._run_script(number, sha, keys, args)
                    for (keys, args), number in zip(calls, numbers, strict=True)
                )
            )
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute()

    def _master_of(self, number: int) -> dict[str, Any]:
        """Where a group's call goes: its slot's master, from the client's map, so the
        client need not hash every declared key to find it (it checks them all: a
        few microseconds an event). A MOVED reply still redirects. With no map yet,
        nothing: the client finds the node itself (and builds the map)."""
        assert isinstance(self._client, RedisCluster)
        try:
            node = self._client.nodes_manager.get_node_from_slot(self._slots[number])
        except (RedisClusterException, KeyError, IndexError):
            return {}
        return {"target_nodes": node}

    def _call_args(
        self,
        group: SlotGroup,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None,
        counting: stats.Counting | None,
        erased: tombstones.Tombstones,
    ) -> tuple[list[str], list[str | bytes]]:
        group_keys = group.keys
        handles = [message_handle(write.message_id) for write in writes]
        keys = [group_keys.record(handle) for handle in handles]
        # The writes in their tuples' order, cut to what the script reads (layout).
        forwarding = self._forward_keep_ms is not None
        batch = [
            (layout.slim(write, forwarding), handle)
            for write, handle in zip(writes, handles, strict=True)
        ]
        trim = self._take_trims(group.number)
        now_ms = time.time_ns() // 1_000_000
        # The parts sent, each with its key (KEYS after the records, in the order
        # layout.OPTIONAL_KEYS names them; a part not sent has no key).
        optional: dict[str, tuple[str, bytes]] = {}
        if checkpoint is not None:
            packed = _pack(dict(checkpoint.positions))
            optional["checkpoint"] = (group_keys.checkpoint(checkpoint.name), packed)
        context = b""
        if counting is not None:
            # What the statistics projection counts, after the merge (changelog).
            packed = _pack(layout.in_order(layout.LOG, min_id_ms=now_ms - LOG_KEEP_S * 1000))
            optional["log"] = (group_keys.changelog, packed)
            context = changelog.pack_context(writes, counting)
        # History (a replay, the demo's seeded days: nothing counted live) is not
        # news: nothing of it goes to the live stream or the forwarding outbox.
        news = counting is None or counting.live
        if self._feed_window_ms is not None and news:
            packed = _pack(layout.in_order(layout.FEED, min_id_ms=now_ms - self._feed_window_ms))
            optional["feed"] = (group_keys.transitions, packed)
            if self._feed_when_watched:
                optional["watched"] = (group_keys.live_watched, b"1")
        if self._forward_keep_ms is not None and news:
            packed = _pack(
                layout.in_order(layout.FORWARD, min_id_ms=now_ms - self._forward_keep_ms)
            )
            optional["forward"] = (group_keys.forward, packed)
        # The tombstones' revision the writes were stripped against (merge.lua checks).
        optional["erasures"] = (group_keys.erasure_epoch, erased.epochs[group.number].encode())
        keys += [optional[name][0] for name in layout.OPTIONAL_KEYS if name in optional]
        sent = {name: optional.get(name, ("", b""))[1] for name in layout.OPTIONAL_KEYS}
        index = layout.in_order(
            layout.INDEX,
            prefix=group_keys.prefix,
            bucket_ms=SEND_TIME_BUCKET_MS,
            status_names=list(state.STATUSES),
            oldest_live_ms=now_ms - self._retention_ms,
        )
        args = layout.in_order(
            layout.ARG,
            ttl_s=self._retention_s,
            status_table=state.STATUS_TABLE,
            max_fields=str(state.MAX_RECORD_FIELDS),
            batch=_pack(batch),
            log_context=context,
            index=_pack(index),
            max_recipients=str(state.MAX_RECIPIENTS),
            max_blob_bytes=str(state.MAX_RECORD_BLOB_BYTES),
            # Replays (nothing counted live) hold messages past the retention briefly.
            hold_s=str(PAST_RETENTION_HOLD_S if counting is not None and not counting.live else 0),
            suppress=_pack(
                layout.in_order(layout.SUPPRESS, keep_s=self._suppression_keep_s, now_ms=now_ms)
            )
            if self._suppression_keep_s
            else b"",
            trim=_pack(trim) if trim else b"",
            declared="1" if self.keyspace.slot_groups is not None else "",
            **sent,
        )
        if self.keyspace.slot_groups is not None:
            keys += _declared(group_keys, writes, trim)
        return keys, args

    def _take_trims(self, number: int) -> list[str]:
        """The group's pending trim candidates, flattened as ARGV[trim] takes them."""
        pending = self._trims[number]
        flat: list[str] = []
        while pending and len(flat) < 3 * _TRIMS_PER_CALL:
            (index_key, member), probe = pending.popitem()
            flat += [index_key, member, probe]
        return flat

    def _note_trims(self, number: int, candidates: list[str]) -> None:
        """Index entries a call found that may be dead, checked by the group's next
        call (their probe keys declared in its KEYS). Bounded: what does not fit is
        found again at a later add, or by a reader."""
        pending = self._trims[number]
        for i in range(0, len(candidates), 3):
            if len(pending) >= _TRIMS_KEPT:
                return
            pending[candidates[i], candidates[i + 1]] = candidates[i + 2]

    async def get(self, message_id: str) -> MessageRecord | None:
        with unavailable("read"):
            raw = await self._client.get(self.key(message_id))
        if raw is None:
            return None
        stored_id, record = record_from_bytes(raw)
        # Two ids sharing a handle (odds ~1e-15) must not answer for each other.
        return record if stored_id == message_id else None

    async def search(self, query: SearchQuery) -> SearchPage:
        with unavailable("read"):
            return await search_groups([group.index for group in self._groups], query)

    async def read_buckets(
        self, buckets: Sequence[int], dimensions: Collection[str] | None = None
    ) -> list[Counter[str]]:
        """Each bucket's overall hash, and its groups' hashes of ``dimensions``: every
        slot group's, summed. Without ``dimensions``, the ones each overall hash marks
        (``d:<dimension>``, written beside its groups), read in a second round trip."""
        groups = [group.keys for group in self._groups]
        overall = [[keys.stats(bucket) for keys in groups] for bucket in buckets]
        if dimensions is not None:
            return await self._read_summed(
                [
                    keys + [k.stats_groups(bucket, d) for k in groups for d in dimensions]
                    for bucket, keys in zip(buckets, overall, strict=True)
                ],
                _BUCKET_FIGURES,
            )
        replies = await self._hgetall([key for keys in overall for key in keys])
        marked: list[list[str]] = []
        for position, bucket in enumerate(buckets):
            names: list[str] = []
            for number, keys in enumerate(groups):
                reply = replies[position * len(groups) + number]
                names += [
                    keys.stats_groups(bucket, field[2:].decode())
                    for field in reply
                    if field.startswith(b"d:")
                ]
            marked.append(names)
        sums = _summed(overall, replies, _BUCKET_FIGURES)
        more = await self._read_summed(marked, _BUCKET_FIGURES)
        for total, extra in zip(sums, more, strict=True):
            total.update(extra)
        return sums

    async def suppression(self, address: str) -> Suppression | None:
        keys = [group.keys.suppression(address) for group in self._groups]
        with unavailable("read"):
            raws = await self._get_many(keys)
        return _earliest(address, raws)

    async def suppressions_of(self, addresses: Sequence[str]) -> dict[str, Suppression]:
        """One MGET (one pipeline on a cluster) for every address and slot group."""
        wanted = list(dict.fromkeys(addresses))
        width = len(self._groups)
        keys = [group.keys.suppression(a) for a in wanted for group in self._groups]
        with unavailable("read"):
            raws = await self._get_many(keys)
        found = {}
        for i, address in enumerate(wanted):
            entry = _earliest(address, raws[i * width : (i + 1) * width])
            if entry is not None:
                found[address] = entry
        return found

    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        with unavailable("read"):
            group_pages = [
                self._group_suppressions(group, reason, since_ms, limit, after)
                for group in self._groups
            ]
            pages = await asyncio.gather(*group_pages)
            found, cursor = merge_pages(pages, limit, lambda entry: (entry.since_ms, entry.address))
            if len(self._groups) > 1 and found:
                # Messages of several groups can suppress one address: each group
                # keeps its own entry, and only the earliest (as one Redis would
                # have kept) is listed.
                addresses = list(dict.fromkeys(entry.address for entry in found))
                raws = await self._get_many(
                    [group.keys.suppression(a) for a in addresses for group in self._groups]
                )
                width = len(self._groups)
                kept = {
                    a: _earliest(a, raws[i * width : (i + 1) * width])
                    for i, a in enumerate(addresses)
                }
                found = [entry for entry in found if kept[entry.address] == entry]
        return found, cursor

    async def _group_suppressions(
        self,
        group: SlotGroup,
        reason: str | None,
        since_ms: int | None,
        limit: int,
        after: SuppressionCursor | None,
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        """A page of one group's listing (its reason's, with ``reason``), newest first,
        after ``after``. Each chunk resumes right after the last row read (found by
        its rank), so the work per page is the page, not its offset into the listing."""
        index = (
            group.keys.suppressions if reason is None else group.keys.suppressions_by_reason(reason)
        )
        low: str | int = "-inf" if since_ms is None else since_ms
        last: tuple[float, str] | None = None if after is None else (after[0], after[1])
        found: list[Suppression] = []
        while len(found) <= limit:
            # No further ahead than the page needs (the merge of groups takes `limit`).
            wanted = min(_SUPPRESSION_CHUNK, limit + 1 - len(found))
            rows = await self._listing_after(index, last, low, wanted)
            self.suppression_rows_read += len(rows)
            if not rows:
                return found, None
            last = (rows[-1][1], rows[-1][0].decode())
            members = [
                m.decode() for m, score in rows if after is None or (int(score), m.decode()) < after
            ]
            raws = await self._get_many([group.keys.suppression(m) for m in members])
            gone: list[str] = []
            for member, raw in zip(members, raws, strict=True):
                entry = None if raw is None else _suppression(member, raw)
                if entry is None or (reason is not None and entry.reason != reason):
                    # Expired, or since suppressed for the other reason: out of this
                    # listing (but the row the next chunk resumes from, for now).
                    if member != last[1]:
                        gone.append(member)
                else:
                    found.append(entry)
            if gone:
                await self._client.zrem(index, *gone)
            if len(rows) < wanted:
                break
        if len(found) > limit:
            page = found[:limit]
            return page, (page[-1].since_ms, page[-1].address)
        return found, None

    async def _listing_after(
        self, index: str, last: tuple[float, str] | None, low: str | int, count: int
    ) -> list[tuple[bytes, float]]:
        """A chunk of a listing's rows (newest first) after ``last`` (score, member),
        down to score ``low``."""
        if last is None:
            return await self._client.zrevrangebyscore(
                index, "+inf", low, start=0, num=count, withscores=True
            )
        score, member = last
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrevrank(index, member)
            pipe.zscore(index, member)
            rank, stored = await pipe.execute()
        if rank is not None and stored == score:
            rows = await self._client.zrevrange(index, rank + 1, rank + count, withscores=True)
            return [row for row in rows if low == "-inf" or row[1] >= float(low)]
        # Not in this listing (another group's row, or removed meanwhile): from its
        # score, past the rows tied with it.
        offset = 0
        while True:
            rows = await self._client.zrevrangebyscore(
                index, score, low, start=offset, num=_SUPPRESSION_CHUNK, withscores=True
            )
            later = [row for row in rows if (row[1], row[0].decode()) < last]
            self.suppression_rows_read += len(rows) - len(later)  # the caller counts these
            if later or len(rows) < _SUPPRESSION_CHUNK:
                return later
            offset += len(rows)

    async def remove_suppression(self, address: str) -> bool:
        with unavailable("write"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.delete(group.keys.suppression(address))
                    pipe.zrem(group.keys.suppressions, address)
                    for reason in SUPPRESSION_REASONS:
                        pipe.zrem(group.keys.suppressions_by_reason(reason), address)
                replies = await pipe.execute()
        return any(replies[0 :: 2 + len(SUPPRESSION_REASONS)])

    # Erasures (service.erasure_job): tombstones, then each record, then what is left.

    async def tombstone(self, address: str, at_ms: int) -> int:
        """The tombstone first, then every group's revision of them: a merge that
        read the revision before this sees it changed and strips again."""
        with unavailable("erase"):
            view = self._tombstones or await self._load_tombstones()
            kept = await self._keep_later(
                keys=[self._keys.tombstones], args=[view.digest(address), at_ms]
            )
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.incr(group.keys.erasure_epoch)
                await pipe.execute()
            # After the revisions moved: a merge from then on cannot suppress the
            # address for a message sent before, so what is suppressed later is new.
            for group in self._groups:
                keys = [
                    group.keys.suppression(address),
                    group.keys.suppressions,
                    *(group.keys.suppressions_by_reason(r) for r in SUPPRESSION_REASONS),
                ]
                await self._forget_suppression(keys=keys, args=[address])
            # At once: a sender in this process checks them (``forgotten``).
            self._tombstones = await self._load_tombstones()
        return int(kept)

    def forgotten(self, address: str, sent_at: int) -> bool:
        return self._tombstones is not None and self._tombstones.forgotten(address, sent_at)

    async def refresh_tombstones(self) -> None:
        epochs = await self._read_epochs()
        view = self._tombstones
        if view is None or dict(view.epochs) != epochs:
            self._tombstones = await self._load_tombstones(epochs)

    async def _read_epochs(self) -> dict[int, str]:
        """Each slot group's revision of the tombstones (merge.lua checks it)."""
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.get(group.keys.erasure_epoch)
                replies = await pipe.execute()
        return {
            n: (epoch or layout.NO_ERASURES.encode()).decode() for n, epoch in enumerate(replies)
        }

    async def _load_tombstones(self, epochs: dict[int, str] | None = None) -> tombstones.Tombstones:
        """The revisions first (``epochs``, when just read), then the tombstones: a
        view is never older than the revisions it carries (what merge.lua checks)."""
        if epochs is None:
            epochs = await self._read_epochs()
        with unavailable("read"):
            key = await self._client.get(self._keys.erasure_key)
            if key is None:
                # Made on first use, stored beside the data it keys.
                await self._client.set(self._keys.erasure_key, tombstones.new_key().hex(), nx=True)
                key = await self._client.get(self._keys.erasure_key)
            stored: dict[str, int] = {}
            async for name, at in self._client.hscan_iter(self._keys.tombstones, count=1000):
                stored[name.decode()] = int(at)
            kept = tombstones.live(stored, int(time.time() * 1000))
            expired = sorted(stored.keys() - kept.keys())
            for start in range(0, len(expired), 1_000):  # bounded calls
                await self._client.hdel(self._keys.tombstones, *expired[start : start + 1_000])
        return tombstones.Tombstones(bytes.fromhex(key.decode()), kept, epochs)

    async def erasure_candidates(self, address: str, before_ms: int, limit: int) -> list[str]:
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.zrangebyscore(
                        group.keys.recipient(address), "-inf", f"({before_ms}", start=0, num=limit
                    )
                replies = await pipe.execute()
        found = [
            f"{number}:{handle.decode()}"
            for number, handles in enumerate(replies)
            for handle in handles
        ]
        return found[:limit]

    async def erase_record(self, candidate: str, address: str) -> bool:
        """Compare and set: a merge landing between the read and the write is not
        overwritten; the erasure is redone on the merged record."""
        number, _, handle = candidate.partition(":")
        group = self._groups[int(number)]
        keys = [group.keys.record(handle), group.keys.recipient(address)]
        with unavailable("erase"):
            while True:
                raw = await self._client.get(keys[0])
                rewritten, drop = b"", False
                if raw is not None:
                    try:
                        message_id, record = record_from_bytes(raw)
                    except Exception:
                        # Not a record this code can read (written by something
                        # else, or damaged): it cannot be rewritten, so when it
                        # names the address it goes whole.
                        drop = address.encode() in raw
                        log.warning("erasure_dropped_unreadable_record", dropped=drop)
                    else:
                        if erase(record, address):
                            rewritten = record_to_bytes(message_id, record)
                args = [raw or b"", rewritten, handle, "1" if drop else ""]
                if await self._erase_record(keys=keys, args=args):
                    return bool(rewritten) or drop

    async def forget_recipient(self, address: str, before_ms: int) -> int:
        with unavailable("erase"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.zremrangebyscore(group.keys.recipient(address), "-inf", f"({before_ms}")
                return sum(await pipe.execute())

    async def save_erasure(self, job_id: str, data: bytes, queued: bool, keep_s: int) -> None:
        with unavailable("write"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(self._keys.erasure(job_id), data, ex=max(1, keep_s))
                if queued:
                    pipe.zadd(self._keys.erasures, {job_id: time.time()}, nx=True)
                else:
                    pipe.zrem(self._keys.erasures, job_id)
                await pipe.execute()

    async def load_erasure(self, job_id: str) -> bytes | None:
        with unavailable("read"):
            return await self._client.get(self._keys.erasure(job_id))

    async def queued_erasures(self, limit: int) -> list[str]:
        with unavailable("read"):
            return [
                name.decode()
                for name in await self._client.zrange(self._keys.erasures, 0, limit - 1)
            ]

    async def hold_erasure_lease(self, owner: str, ttl_ms: int) -> bool:
        with unavailable("lease"):
            return bool(
                await self._hold_lease(keys=[self._keys.erasure_lease], args=[owner, ttl_ms])
            )

    async def replayed(self, digest: str) -> bool:
        with unavailable("read"):
            return bool(await self._client.exists(self._keys.replayed(digest)))

    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        with unavailable("write"):
            await self._client.set(self._keys.replayed(digest), 1, ex=max(1, keep_s))

    async def read_rollups(
        self, step: str, starts: Sequence[int], fields: Fields | None = None
    ) -> list[Counter[str]]:
        """Without ``fields``, every field of each period, read whole. With, only those,
        of the periods each group's index lists (one ZRANGEBYSCORE a group, not one
        read a period a group): the overall figures from their own small hash, and
        the groups of ``fields.by`` (HSCAN MATCH: Redis filters the rollup); a closed
        period from the in-process cache when it is there."""
        if fields is None:
            return await self._read_summed(
                [[group.keys.rollup(step, start) for group in self._groups] for start in starts]
            )
        if not starts:
            return []
        now_s = time.time()
        step_s = stats.STEPS[step]
        answer: dict[int, Counter[str]] = {}
        wanted: list[int] = []
        for start in starts:
            cached = self._closed.get((step, start, fields.name), now_s)
            if cached is not None:
                answer[start] = cached
            else:
                wanted.append(start)
        self.rollup_reads["cached"] += len(answer)
        if wanted:
            written = await self._rollups_written(step, min(wanted), max(wanted))
            wanted = [start for start in wanted if start in written]
        if wanted:
            read = await self._read_summed(
                [
                    [group.keys.rollup_overall(step, start) for group in self._groups]
                    for start in wanted
                ]
            )
            self.rollup_reads["overall"] += len(wanted) * len(self._groups)
            if fields.by is not None:
                grouped = await self._scan_summed(
                    [
                        [group.keys.rollup(step, start) for group in self._groups]
                        for start in wanted
                    ],
                    fields.group_patterns(),
                )
                for total, more in zip(read, grouped, strict=True):
                    total.update(more)
            for start, counters in zip(wanted, read, strict=True):
                answer[start] = counters
                if rollup_cache.closed(step_s, start, now_s):
                    self._closed.put((step, start, fields.name), counters, now_s)
        return [answer.get(start, Counter()) for start in starts]

    async def _rollups_written(self, step: str, first: int, last: int) -> set[int]:
        """The periods in ``[first, last]`` any group's index lists."""
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.zrangebyscore(group.keys.rollup_index(step), first, last)
                replies = await pipe.execute()
        self.rollup_reads["index"] += len(replies)
        return {int(member) for reply in replies for member in reply}

    async def _scan_summed(
        self, key_sets: list[list[str]], patterns: list[str]
    ) -> list[Counter[str]]:
        """Per set of keys, the sum of their fields matching any of ``patterns``: one
        HSCAN a key and pattern, all pipelined, each asked for the whole hash at once
        (a rollup is a few thousand fields); a scan Redis cut short goes on."""
        keys = [key for key_set in key_sets for key in key_set]
        sums = [Counter[str]() for _ in key_sets]
        owners = [n for n, key_set in enumerate(key_sets) for _ in key_set]
        todo = [
            (n, key, pattern, 0)
            for n, key in zip(owners, keys, strict=True)
            for pattern in patterns
        ]
        with unavailable("read"):
            while todo:
                # A round at a time: a year of groups is hundreds of thousands of
                # fields, and the event loop (so /healthz) gets its turn between rounds.
                batch, todo = todo[:_SCANS_A_ROUND], todo[_SCANS_A_ROUND:]
                async with self._client.pipeline(transaction=False) as pipe:
                    for _, key, pattern, cursor in batch:
                        pipe.hscan(key, cursor, match=pattern, count=_HSCAN_COUNT)
                    replies = await pipe.execute()
                self.rollup_reads["scans"] += len(batch)
                found = [(n, fields) for (n, *_), (_, fields) in zip(batch, replies, strict=True)]
                # Added up in a worker thread, likewise.
                await asyncio.to_thread(_add_into, sums, found)
                todo += [
                    (n, key, pattern, int(cursor))
                    for (n, key, pattern, _), (cursor, _) in zip(batch, replies, strict=True)
                    if int(cursor) != 0
                ]
        return sums

    async def _read_summed(
        self, key_sets: list[list[str]], heads: tuple[bytes, ...] | None = None
    ) -> list[Counter[str]]:
        """One Counter per set of keys: the sum of those hashes (one per group), only
        their fields starting with one of ``heads`` (None: every field)."""
        return _summed(key_sets, await self._hgetall([k for keys in key_sets for k in keys]), heads)

    async def _hgetall(self, keys: list[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each key, pipelined."""
        if not keys:
            return []
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                return await pipe.execute()

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        """GET of keys in any slots (MGET needs one slot on a cluster)."""
        if not keys:
            return []
        if not self.cluster:
            return await self._client.mget(keys)
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return await pipe.execute()

    async def stats_revisions(self) -> stats.Revisions:
        """The slot groups' revisions, added up: a bucket's number moves when any group's
        does. A group whose sequence went back (its Redis lost data) makes the whole
        sequence read as reset, once."""
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.hgetall(group.keys.stats_revisions)
                replies = await pipe.execute()
        sequence = 0
        buckets: Counter[int] = Counter()
        went_back = False
        for number, raw in enumerate(replies):
            group_sequence = int(raw.pop(b"seq", 0))
            went_back = went_back or group_sequence < self._sequences[number]
            self._sequences[number] = group_sequence
            sequence += group_sequence
            for bucket, revision in raw.items():
                buckets[int(bucket)] += int(revision)
        if went_back and len(self._groups) > 1:
            sequence = -1
        return stats.Revisions(sequence, dict(buckets))

    async def follow_transitions(
        self, after: str = "$", block_ms: int = 1_000
    ) -> tuple[str, list[Transition]]:
        """Transitions appended after stream id ``after`` (waits up to ``block_ms``).

        Returns the id to pass next time, so a follower that reconnects resumes where
        it stopped (within the stream's retained length). With slot groups, the id is the
        slot groups' ids joined by spaces, and the slot groups' streams are polled.
        """
        keys = self.transitions_keys
        positions = after.split(" ") if after != "$" else ["$"] * len(keys)
        if len(positions) != len(keys):
            positions = ["$"] * len(keys)  # a place from another layout: from now on
        transitions: list[Transition] = []
        with unavailable("read"):
            if len(keys) == 1:
                reply = await self._client.xread({keys[0]: positions[0]}, block=block_ms)
                positions[0] = _read_entries(reply, positions[0], transitions)
                return positions[0], transitions

            async def read_each() -> list[Transition]:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, position in zip(keys, positions, strict=True):
                        pipe.xread({key: position}, count=_FOLLOW_COUNT)
                    replies = await pipe.execute()
                for number, reply in enumerate(replies):
                    positions[number] = _read_entries(reply, positions[number], transitions)
                return transitions

            await poll_groups(read_each, block_ms)
            return " ".join(positions), transitions

    async def last_transition_id(self) -> str:
        """The id of the newest stream entry ("0-0" when empty): where to start
        following (one per group, joined by spaces)."""
        with unavailable("read"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in self.transitions_keys:
                    pipe.xrevrange(key, count=1)
                replies = await pipe.execute()
        return " ".join(entries[0][0].decode() if entries else "0-0" for entries in replies)

    async def load_checkpoint(self, name: str) -> dict[str, str]:
        """Where a source resumes. With slot groups, each group's copy says what that
        group holds, so a position is the lowest of them: a group whose master failed
        over and lost its last writes (Redis replicates asynchronously) takes the
        source back to before them. A position some group lacks entirely (that group
        lost everything) is left out, as if nothing was stored."""
        with unavailable("read", one_call=True):
            async with self._client.pipeline(transaction=False) as pipe:
                for group in self._groups:
                    pipe.hgetall(group.keys.checkpoint(name))
                replies = await pipe.execute()
        copies = [{k.decode(): v.decode() for k, v in raw.items()} for raw in replies]
        if len(copies) == 1:
            return copies[0]
        common = set(copies[0]).intersection(*copies[1:])
        return {position: min((c[position] for c in copies), key=int) for position in common}

    async def claim_format(self, *, rerun: bool = False) -> int:
        """Record this version's data format, migrating older data in place first, or
        find a newer one and refuse it. Returns the format found (before migrating).

        Replicas of two versions may share one Redis during a rolling upgrade while
        they read the same format; a version that finds a newer format than it
        knows (a downgrade past a format change) must not write into it. ``rerun``
        (``ses-tracker migrate``) runs every step again: each is idempotent, and a
        second run folds in what older replicas wrote after the first.
        """
        key = self._keys.format
        # A message's slot group is its handle modulo the count: another count would
        # look for every stored message in the wrong place. 0: one Redis, no groups.
        layout_key = self._keys.slot_groups
        groups = self.keyspace.slot_groups or 0
        with unavailable("read"):
            await self._client.set(key, FORMAT_VERSION, nx=True)
            stored = int(await self._client.get(key) or FORMAT_VERSION)
            await self._client.set(layout_key, groups, nx=True)
            stored_groups = int(await self._client.get(layout_key) or groups)
        if stored > FORMAT_VERSION:
            raise StoreFormatError(
                f"Redis holds ses-tracker data format {stored}; this version reads up to "
                f"{FORMAT_VERSION}: run a newer ses-tracker, or use an empty Redis"
            )
        if stored_groups != groups:
            raise StoreLayoutError(
                f"Redis holds ses-tracker data in {stored_groups or 'no'} slot groups, and "
                f"this process was started with {groups or 'none'} (SES_TRACKER_REDIS_SLOT_GROUPS, "
                "SES_TRACKER_REDIS_CLUSTER): start it as the data was written, or migrate "
                "(README, Moving from one Redis to a cluster)"
            )
        steps = migrations.pending(0 if rerun else stored, FORMAT_VERSION)
        with unavailable("migration", one_call=True):
            for step in steps:
                log.info("store_migrating", to_format=step.to_version, summary=step.summary)
                await step.run(self)
            if steps or stored < FORMAT_VERSION:
                await self._raise_format(FORMAT_VERSION)
        return stored

    async def _raise_format(self, version: int) -> None:
        """Raise the stored format to ``version``, never lower it (a newer replica may
        have raised it further meanwhile)."""
        await self._client.eval(_RAISE_FORMAT, 1, self._keys.format, version)

    async def memory(self) -> MemoryFigures | None:
        """Redis's used memory, its ``maxmemory`` (0: none) and keys it evicted."""
        try:
            if self.cluster:
                # The busiest master is the one that runs out first.
                primaries = RedisCluster.PRIMARIES
                memories = await self._client.info("memory", target_nodes=primaries)
                counters = await self._client.info("stats", target_nodes=primaries)
                figures = [
                    _memory_figures(memories[node], counters.get(node, {})) for node in memories
                ]
                fullest = max(figures, key=lambda f: f.used_bytes / (f.max_bytes or 2**62))
                return MemoryFigures(
                    fullest.used_bytes, fullest.max_bytes, sum(f.evicted for f in figures)
                )
            return _memory_figures(
                await self._client.info("memory"), await self._client.info("stats")
            )
        except REDIS_UNAVAILABLE:
            return None

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:  # readiness is a yes/no; the cause is logged by the caller
            return False

    async def close(self) -> None:
        await self._client.aclose()

    def describe(self) -> str:
        if isinstance(self._client, RedisCluster):
            nodes = self._client.get_nodes()
            return f"RedisStore(cluster of {len(nodes)} nodes, {len(self._groups)} slot groups)"
        kwargs = self._client.connection_pool.connection_kwargs
        return f"RedisStore({kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)})"


def _memory_figures(memory: dict[str, Any], counters: dict[str, Any]) -> MemoryFigures:
    limit = int(memory.get("maxmemory", 0))
    return MemoryFigures(
        int(memory.get("used_memory", 0)), limit or None, int(counters.get("evicted_keys", 0))
    )


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
# Buckets an HSCAN may visit in one call (Redis visits up to ten times COUNT): the
# whole of any rollup hash, so one call a key.
_HSCAN_COUNT = 100_000
_SCANS_A_ROUND = 64
# Trim candidates checked per call, and kept waiting per slot group.
_TRIMS_PER_CALL = 256
_TRIMS_KEPT = 2_048
_PROBLEM_STATUSES = state.STATUSES[layout.CODES["PROBLEM_FIRST"] :]


def _declared(keys: RedisKeys, writes: Sequence[MessageWrite], trim: list[str]) -> list[str]:
    """Every key beyond the fixed ones that merge.lua may touch for these writes:
    their send-time buckets, their addresses' indexes and suppressions, the shared
    indexes, and the trim candidates' keys. A superset is harmless; a key missing is refused by the
    script (its twin is ``given`` in merge.lua)."""
    names = {keys.pending, keys.buckets, keys.suppressions}
    names.update(keys.suppressions_by_reason(reason) for reason in SUPPRESSION_REASONS)
    names.update(keys.status(name) for name in _PROBLEM_STATUSES)
    addresses: set[str] = set()
    unsafe: set[str] = set()
    for write in writes:
        names.add(keys.send_time_bucket(str(max(0, write.sent_at) // SEND_TIME_BUCKET_MS)))
        addresses.update(write.destination)
        for event in write.events:
            for address, bits in event.recipient_bits:
                addresses.add(address)
                if bits & state.UNSAFE:
                    unsafe.add(address)  # only these can become suppressions
    names.update(keys.recipient(address) for address in addresses)
    names.update(keys.suppression(address) for address in unsafe)
    names.update(trim[0::3])
    names.update(trim[2::3])
    return list(names)


# What a live bucket read returns: figures, not the admission fields (a:, n:) that
# format 1 kept in the bucket nor the marks of its dimensions (d:).
_BUCKET_FIGURES = (b"c:", b"l:", b"y:", b"g:")


def _summed(
    key_sets: list[list[str]], replies: list[dict[bytes, bytes]], heads: tuple[bytes, ...] | None
) -> list[Counter[str]]:
    """``replies`` (HGETALLs of every key of ``key_sets``, in order) summed per set."""
    sums: list[Counter[str]] = []
    position = 0
    for keys in key_sets:
        total: Counter[str] = Counter()
        for reply in replies[position : position + len(keys)]:
            for field, count in reply.items():
                if heads is None or field[:2] in heads:
                    total[field.decode()] += int(count)
        position += len(keys)
        sums.append(total)
    return sums


# A stream follower's read per group per poll (a "$" position reads none).
_FOLLOW_COUNT = 1_000


def _read_entries(reply: Any, position: str, into: list[Transition]) -> str:
    """Appends the transitions of an XREAD reply; returns the stream's new position."""
    for _stream, entries in reply or ():
        for entry_id, fields in entries:
            position = entry_id.decode()
            for message_id, address, old, new, at, latency in msgpack.unpackb(
                fields[layout.FIELD_TRANSITIONS.encode()], raw=False
            ):  # layout.FED
                into.append(
                    Transition(
                        message_id=message_id,
                        recipient=address,
                        from_status=_status_or_new(old),
                        to_status=state.STATUSES[new],
                        at=int(at),
                        latency_ms=None if latency == _NO_LATENCY else int(latency),
                    )
                )
    return position


def _add_into(sums: list[Counter[str]], found: list[tuple[int, dict[bytes, bytes]]]) -> None:
    """Each scan's fields added to its set's sum (``found``: set number, fields)."""
    for n, fields in found:
        total = sums[n]
        for field, count in fields.items():
            total[field.decode()] += int(count)


def _earliest(address: str, raws: Sequence[bytes | None]) -> Suppression | None:
    """Of one address's entries in each group, the earliest (the first group's on a tie)."""
    entries = [_suppression(address, raw) for raw in raws if raw is not None]
    return min(entries, key=lambda entry: entry.since_ms, default=None)


def _suppression(address: str, raw: bytes) -> Suppression:
    reason, since_ms, message_id, subtype = msgpack.unpackb(raw, raw=False)  # layout.SUPPRESSION
    return Suppression(address, reason, int(since_ms), message_id, subtype or None)
