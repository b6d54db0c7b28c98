"""The statistics projection on Redis: applies the change log (``changelog``) to the
live buckets, their revisions and the hourly and daily rollups.

Each slot group has its own log and its own projection checkpoint (the id of the
last entry applied, ``proj:stats``). A run reads the entries after the checkpoint,
counts them in Python (``changelog.count_entries``, with the classes the memory
store counts with),
and applies the sums in one script (``project.lua``) that first checks the
checkpoint is still where the run started: a run applied twice, or by two replicas
at once, counts once. The run also trims the entries it applied from the log.

Who runs it: the process that merged, right after its merge (so a statistic is
visible when the merge returns), and, every ``SWEEP_S``, whichever process holds
the group's lease (``proj-lease:stats``), for entries a process that died between
its merge and its run left behind. Only the lease holder, or a process that finds
the lease free, runs a group: replicas do not count the same entries twice over
for nothing.

How long the log is kept: entries are trimmed once applied (a run keeps the entry
of its checkpoint), and in any case after ``LOG_KEEP_S`` (the merge trims by age as
it appends). A projection further behind than that finds its checkpoint's entry
gone: it says so (log line ``projection_fell_behind``, ``lost`` counter), goes on
from the oldest entry left, and the statistics of the trimmed minutes are short.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import msgpack
import structlog
from redis.exceptions import NoScriptError

from service import stats
from service.outages import OUTAGES, STORE
from service.stores.base import StoreUnavailable
from service.stores.redis import changelog, layout, lease
from service.stores.redis.errors import unavailable
from service.stores.redis.keys import RedisKeys

log = structlog.get_logger(__name__)

NAME = "stats"
# The log is kept at most this long: a projection further behind has lost the rest.
LOG_KEEP_S = 600
# Entries read, counted and applied per run (a run's script stays short).
ENTRIES_PER_RUN = 64
# How often the lease holder looks for entries left behind.
SWEEP_S = 0.25
LEASE_MS = 5_000

_BODY = resources.files("service.stores.redis").joinpath("project.lua").read_text()
PROJECT_SCRIPT = layout.lua_prelude(_BODY) + _BODY


# Sends one script call to a group's node: (group number, sha, keys, args) -> reply.
Run = Callable[[int, str, list[str], list[Any]], Awaitable[Any]]


class StatsProjection:
    """``groups``: each slot group's keys, by group number. ``run``: how the store
    sends a script to a group (its master, on a cluster)."""

    def __init__(self, client: Any, groups: Sequence[RedisKeys], run: Run) -> None:
        self._client = client
        self._groups = list(groups)
        self._run = run
        self._holder = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._shas: dict[str, str] = {}  # script -> its sha, once loaded
        self._locks = [asyncio.Lock() for _ in self._groups]
        # Per group: when our lease is known to run out (monotonic s; 0: not ours),
        # when to ask for it again if another process holds it, and the checkpoint
        # as our last run left it (None: read it; only we move it while we hold the
        # lease, and a run that finds it moved reads it again).
        self._lease_until = [0.0] * len(self._groups)
        self._next_ask = [0.0] * len(self._groups)
        self._checkpoints: list[str | None] = [None] * len(self._groups)
        self.applied_entries = 0
        self.runs = 0
        self.lost = 0  # runs that found entries trimmed before they were applied
        self.skipped = 0  # entries or targets that could not be applied (counted loss)
        # Seconds from the oldest entry's append to its run's apply, last run; and
        # each applied entry's, the latest few thousand (bench.bench_projection).
        self.last_delay_s = 0.0
        self.delays: deque[float] = deque(maxlen=4_096)

    async def catch_up(self, number: int, *, force: bool = False) -> int:
        """Apply every entry of group ``number`` not yet applied; how many were.
        Without ``force``, only when this process holds the group's lease or finds
        it free (else the holder will). Raises ``StoreUnavailable``."""
        # One run of a group at a time in this process: one under way may have read
        # the log before this caller's entry was appended, so this caller waits and
        # runs after it.
        async with self._locks[number]:
            if not force and not await self._hold(number):
                return 0
            applied = 0
            while True:
                done, more = await self._run_once(number)
                applied += done
                if not more:
                    return applied

    async def sweep(self) -> None:
        """One pass over every group whose lease this process holds or takes."""
        for number in range(len(self._groups)):
            await self.catch_up(number)

    async def run_forever(self) -> None:
        """Sweep every ``SWEEP_S`` until cancelled: an outage is one line for the
        process (``service.outages``), and the sweep goes on when Redis is back."""
        while True:
            try:
                await self.sweep()
                OUTAGES.ok(STORE)
            except StoreUnavailable as exc:
                OUTAGES.failed(STORE, exc, part="statistics projection")
            await asyncio.sleep(SWEEP_S)

    async def _hold(self, number: int) -> bool:
        """Whether this process holds group ``number``'s lease (renewed when a third
        of it is gone), taking it when free. A process that found it held asks again
        only after half a lease: the holder sweeps meanwhile."""
        now = time.monotonic()
        until = self._lease_until[number]
        if until - now > LEASE_MS / 1000 * 2 / 3:
            return True
        if until == 0.0 and now < self._next_ask[number]:
            return False
        keys = self._groups[number]
        held = await self._script(
            number,
            lease.TAKE_OR_RENEW,
            [keys.projection_lease(NAME)],
            [self._holder, LEASE_MS],
            "lease",
        )
        if held:
            self._lease_until[number] = now + LEASE_MS / 1000
        else:
            self._lease_until[number] = 0.0
            self._checkpoints[number] = None
            self._next_ask[number] = now + LEASE_MS / 2000
        return bool(held)

    async def _run_once(self, number: int) -> tuple[int, bool]:
        """One run: (entries applied, whether more may wait)."""
        keys = self._groups[number]
        cached = self._checkpoints[number]
        with unavailable("change log read", one_call=True):
            start_id = cached
            if start_id is None:
                start = await self._client.get(keys.projection(NAME))
                start_id = start.decode() if start else ""
            # From the checkpoint's own entry, which each run leaves in the log: if
            # it is gone, the merges' trim by age took it, and maybe entries after it.
            entries = await self._client.xrange(
                keys.changelog, start_id or "-", "+", count=ENTRIES_PER_RUN + 1
            )
        if start_id and entries:
            if entries[0][0].decode() == start_id:
                entries = entries[1:]
            elif cached is not None:
                # Our checkpoint may be stale (another process ran meanwhile, and
                # trimmed its entry): read it again before calling anything lost.
                self._checkpoints[number] = None
                return 0, True
            else:
                self._note_loss(start_id, entries[0][0].decode())
        entries = entries[:ENTRIES_PER_RUN]
        if not entries:
            return 0, False
        counted = changelog.count_entries(fields for _, fields in entries)
        self.skipped += counted.skipped
        last_id = entries[-1][0].decode()
        key_list, plan = _plan(keys, counted)
        args = [start_id, last_id, last_id, msgpack.packb(plan, use_bin_type=True)]
        reply = await self._script(number, PROJECT_SCRIPT, key_list, args, "projection")
        applied, failures = msgpack.unpackb(reply, raw=False)
        self.runs += 1
        if not applied:
            # Another replica applied this run first: start again from its checkpoint.
            self._checkpoints[number] = None
            return 0, True
        self._checkpoints[number] = last_id
        if failures:
            self.skipped += len(failures)
            log.warning(
                "projection_target_failed",
                projection=NAME,
                failures=len(failures),
                error=str(failures[0])[:200],
            )
        self.applied_entries += len(entries)
        now = time.time()
        for entry_id, _ in entries:
            self.delays.append(max(0.0, now - int(entry_id.split(b"-", 1)[0]) / 1000))
        self.last_delay_s = self.delays[-len(entries)]
        return len(entries), len(entries) == ENTRIES_PER_RUN

    @property
    def leases(self) -> int:
        """Slot groups whose lease this process holds now."""
        now = time.monotonic()
        return sum(1 for until in self._lease_until if until > now)

    async def _script(
        self, number: int, script: str, keys: list[str], args: list[Any], what: str
    ) -> Any:
        """Run a script on group ``number``'s node, loading it where it is missing (a
        restarted Redis, a replica just promoted)."""
        sha = self._shas.get(script)
        with unavailable(what, one_call=True):
            if sha is None:
                sha = self._shas[script] = await self._client.script_load(script)
            try:
                return await self._run(number, sha, keys, args)
            except NoScriptError:
                sha = self._shas[script] = await self._client.script_load(script)
                return await self._run(number, sha, keys, args)

    def _note_loss(self, start_id: str, first_id: str) -> None:
        self.lost += 1
        log.warning(
            "projection_fell_behind",
            projection=NAME,
            checkpoint=start_id,
            resumed_at=first_id,
            keep_s=LOG_KEEP_S,
        )


def _plan(keys: RedisKeys, counted: changelog.Counted) -> tuple[list[str], list[Any]]:
    """KEYS and the plan (``layout.PLAN``) of what ``counted`` holds."""
    key_list = [keys.projection(NAME), keys.stats_revisions, keys.changelog]
    positions: dict[str, int] = {}

    def at(key: str) -> int:
        position = positions.get(key)
        if position is None:
            key_list.append(key)
            position = positions[key] = len(key_list)
        return position

    # TTLs count from the merges' clock, as when the merge counted them itself.
    now_s = counted.now_ms // 1000
    now_bucket = stats.bucket_of(counted.now_ms)
    admissions: list[list[Any]] = []
    for hour, admission in sorted(counted.admissions.items()):
        order = changelog.admission_order(admission)
        ttl = hour + stats.HOUR_S - now_bucket + stats.BUCKET_TTL_S
        if order and ttl > 0:
            admissions.append(
                layout.in_order(
                    layout.ADMISSION,
                    key=at(keys.stats_admission(hour)),
                    ttl_s=ttl,
                    cap=stats.LIVE_GROUP_CAP,
                    order=order,
                )
            )
    live_targets = []
    for bucket, counters in sorted(counted.live.items()):
        ttl = bucket - now_bucket + stats.BUCKET_TTL_S
        if ttl <= 0:
            continue  # no window reads it any more
        groups: list[list[Any]] = []
        dimension_keys: dict[str, int] = {}
        for dimension, fields in counters.groups.items():
            groups += _counted_groups(fields)
            dimension_keys[dimension] = at(keys.stats_groups(bucket, dimension))
        hour = stats.admission_hour(bucket)
        live_targets.append(
            layout.in_order(
                layout.LIVE,
                bucket=bucket,
                key=at(keys.stats(bucket)),
                ttl_s=ttl,
                admission_key=at(keys.stats_admission(hour)),
                overall={k: v for k, v in counters.overall.items() if v},
                groups=groups,
                dimension_keys=dimension_keys,
            )
        )
    rollup_targets = []
    for (step, start), counters in sorted(counted.rollups.items()):
        keep_s = counted.keep_days.get(step, 0) * stats.DAY_S
        ttl = start + stats.STEPS[step] + keep_s - now_s
        if ttl <= 0:
            continue
        overall, _ = stats.split_groups(counters)
        admissions.append(
            layout.in_order(
                layout.ADMISSION,
                key=at(keys.rollup(step, start)),
                ttl_s=ttl,
                cap=stats.HISTORY_GROUP_CAP,
                order=changelog.admission_order(counters),
            )
        )
        rollup_targets.append(
            layout.in_order(
                layout.ROLLUP,
                key=at(keys.rollup(step, start)),
                ttl_s=ttl,
                overall=overall,
                groups=_counted_groups(counters),
                overall_key=at(keys.rollup_overall(step, start)),
                index_key=at(keys.rollup_index(step)),
                start=start,
                expired_before=now_s - stats.STEPS[step] - keep_s,
            )
        )
    plan = layout.in_order(
        layout.PLAN,
        admissions=admissions,
        live=live_targets,
        rollups=rollup_targets,
        now_bucket=now_bucket,
        bucket_ttl_s=stats.BUCKET_TTL_S,
    )
    return key_list, plan


def _counted_groups(fields: Mapping[str, int]) -> list[list[Any]]:
    """A target's ``g:`` fields as layout.COUNTED_GROUP rows, groups in the order
    they were first counted (admission is first come)."""
    _, per_dimension = stats.split_groups(fields)
    return [
        [f"{dimension}={value}", dict(tails)]
        for dimension, values in per_dimension.items()
        for value, tails in values.items()
    ]
