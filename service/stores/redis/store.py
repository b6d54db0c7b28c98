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
trip: a batch whose work is over one call's budget (``service.stores.redis.merge_cost``)
is split into several EVALSHAs sent as one pipeline, so no single script holds
Redis for long. Scripts run atomically, so two
processes merging the same message at once lose nothing; and since the merge is
idempotent, a batch retried after an error or a crash does no harm.

On a Redis Cluster (``slot_groups``, see ``service.stores.redis.slots``) every key above
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
from collections.abc import Collection, Sequence
from importlib import resources
from typing import Any

import msgpack
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException

from service import stats
from service.search import SCAN_BUDGET, SearchPage, SearchQuery, message_handle
from service.state import MessageRecord, MessageWrite, Transition
from service.stores.base import (
    Checkpoint,
    MemoryFigures,
    MergeRejected,
    Store,
    StoreUnavailable,
)
from service.stores.redis import layout, merge_cost, migrations
from service.stores.redis.erasures import ErasureSteps
from service.stores.redis.errors import (
    REDIS_UNAVAILABLE,
    unavailable,
)
from service.stores.redis.groups import SlotGroup
from service.stores.redis.keys import DEFAULT_PREFIX
from service.stores.redis.keyspace import Client, RedisKeyspace
from service.stores.redis.merge_call import MergeCalls
from service.stores.redis.projection import StatsProjection
from service.stores.redis.record import record_from_bytes
from service.stores.redis.search import IndexReader, search_groups
from service.stores.redis.slots import (
    group_of,
)
from service.stores.redis.statistics import StatisticsReads
from service.stores.redis.suppressions import SuppressionReads
from service.stores.redis.transitions import TransitionReads
from service.suppressions import DEFAULT_DAYS as DEFAULT_SUPPRESSION_DAYS

log = structlog.get_logger(__name__)

# The layout of records, indexes and statistics. A release that changes it raises
# this and ships the step from the format before (service.stores.redis.migrations; README,
# Rolling upgrades). 2: every key family in a namespace of its own.
FORMAT_VERSION = 2


class StoreFormatError(RuntimeError):
    """The store holds data in a format newer than this version reads."""


class StoreLayoutError(StoreFormatError):
    """The store holds data laid out in another number of slot groups (or none)."""


_MERGE_BODY = resources.files("service.stores.redis").joinpath("merge.lua").read_text()
MERGE_SCRIPT = layout.lua_prelude(_MERGE_BODY) + _MERGE_BODY


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


class RedisStore(SuppressionReads, ErasureSteps, StatisticsReads, TransitionReads, Store):
    """``slot_groups``: ``None`` for one Redis (the plain layout), else the number of
    slot groups the keyspace is split into (a Redis Cluster; fixed for the data's
    life).

    This module holds the merge (the Python half of ``merge.lua``'s call), message
    reads, checkpoints and the data format; each other role of ``Store`` is a part
    in a module of its own, sharing the client and the slot groups
    (``groups.GroupedReads``): ``suppressions``, ``erasures``, ``statistics`` and
    ``transitions``.
    """

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
        self._keys = keyspace.keys
        # Units of script work one merge call may take (service.stores.redis.merge_cost).
        self._call_budget = call_budget
        # Each call's KEYS and ARGV, and its reply read back. With a feed window,
        # each merge appends its transitions to a stream that every replica follows
        # (follow_transitions), kept for that many seconds; and with
        # ``feed_when_watched``, only while some process has a live page open (its
        # flag, service.live_demand): what serve runs. Nobody reads the stream
        # otherwise, and writing it was about a fifteenth of Redis's work per
        # event. With a keep, each merge also appends its transitions to the
        # forwarding outbox (service.forward), kept that long for senders that fall
        # behind.
        self._calls = MergeCalls(
            keyspace,
            retention_s=retention_s,
            feed_window_s=feed_window_s,
            feed_when_watched=feed_when_watched,
            forward_keep_s=forward_keep_s,
            suppression_days=suppression_days,
        )
        self._sha: str | None = None
        # A page's candidates are shared out between the groups searched at once.
        budget = -(-scan_budget // len(keyspace.groups))
        self._groups = [
            SlotGroup(number, keys, IndexReader(client, keys.prefix, budget))
            for number, keys in enumerate(keyspace.groups)
        ]
        # The tombstones as last read (service.tombstones), None until first used, and
        # the erasure steps' scripts.
        self._prepare_erasures(client)
        # Merge calls sent again because an erasure changed the tombstones meanwhile.
        self.stale_erasure_calls = 0
        # Each group's hash slot (its prefix holds the tag).
        self._slots = [key_slot(group.keys.prefix.encode()) for group in self._groups]
        # Listing rows read by suppression pages (tests count the work, not the time).
        self.suppression_rows_read = 0
        self._prepare_statistics()
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
    def slot_groups(self) -> list[SlotGroup]:
        return list(self._groups)

    def slot_group(self, message_id: str) -> SlotGroup:
        handle = message_handle(message_id)
        return self._groups[group_of(handle, len(self._groups))]

    def key(self, message_id: str) -> str:
        return self.slot_group(message_id).keys.record(message_handle(message_id))

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
                calls.append(self._calls.args(group, chunk, parts[-1][1], counting, view))
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
                    calls[n] = self._calls.args(parts[n][0], chunks[n], parts[n][1], counting, view)
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
            made, refusals = self._calls.read_reply(number, chunk, reply)
            transitions.extend(made)
            refused.update(refusals)
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

    # Erasures (service.erasure_job): tombstones, then each record, then what is left.

    async def replayed(self, digest: str) -> bool:
        with unavailable("read"):
            return bool(await self._client.exists(self._keys.replayed(digest)))

    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        with unavailable("write"):
            await self._client.set(self._keys.replayed(digest), 1, ex=max(1, keep_s))

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
