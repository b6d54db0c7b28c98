"""Statistics as the projection leaves them (``projection`` + ``project.lua``):
live buckets, revisions and hourly/daily rollups, every slot group's added up; a
closed history period served from this process's cache (``rollup_cache``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Sequence

from service import stats
from service.history import Fields
from service.stores.base import Statistics
from service.stores.redis import rollup_cache
from service.stores.redis.errors import unavailable
from service.stores.redis.groups import GroupedReads, summed

# Buckets an HSCAN may visit in one call (Redis visits up to ten times COUNT): the
# whole of any rollup hash, so one call a key.
_HSCAN_COUNT = 100_000
_SCANS_A_ROUND = 64
# What a live bucket read returns: figures, not the admission fields (a:, n:) that
# format 1 kept in the bucket nor the marks of its dimensions (d:).
_BUCKET_FIGURES = (b"c:", b"l:", b"y:", b"g:")


class StatisticsReads(GroupedReads, Statistics):
    """The store's statistics reads; history's reads counted by kind in
    ``rollup_reads`` (tests count the work, not the time)."""

    def _prepare_statistics(self) -> None:
        self.rollup_reads: Counter[str] = Counter()
        self._closed = rollup_cache.ClosedPeriods()
        # The slot groups' sequences last seen (stats_revisions), to notice one going back.
        self._sequences: list[int] = [0] * len(self._groups)

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
        sums = summed(overall, replies, _BUCKET_FIGURES)
        more = await self._read_summed(marked, _BUCKET_FIGURES)
        for total, extra in zip(sums, more, strict=True):
            total.update(extra)
        return sums

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


def _add_into(sums: list[Counter[str]], found: list[tuple[int, dict[bytes, bytes]]]) -> None:
    """Each scan's fields added to its set's sum (``found``: set number, fields)."""
    for n, fields in found:
        total = sums[n]
        for field, count in fields.items():
            total[field.decode()] += int(count)
