"""The one interface every state store implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from service.history import Fields
from service.search import SearchPage, SearchQuery
from service.state import MessageRecord, MessageWrite, Transition
from service.stats import BUCKET_S, Counting, Revisions
from service.suppressions import Suppression

# Where a page of suppressions ended: (since_ms, address) of its last.
SuppressionCursor = tuple[int, str]

# In a replay (a merge that counts nothing live), a message sent before the
# retention keeps its record only this long after its last merge: long enough to
# merge the rest of its events, which archives hold minutes apart, exactly once.
# What lasts is what it counted in the history rollups (service.stats):
# recreating a year of records for 14 days would cost hundreds of gigabytes.
PAST_RETENTION_HOLD_S = 300


class StoreUnavailable(Exception):
    """The store cannot be reached; the caller should retry later, nothing was lost.

    ``retry_after_s``: wait at least this long first (a call that timed out on the
    client may still be running in Redis, and one sent again now would queue behind
    it)."""

    def __init__(self, message: str, *, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MergeRejected(Exception):
    """The store refused a merge for what it was given, not for being out of reach (a
    script error such as WRONGTYPE): the same call fails the same way every time.

    ``refused`` names the messages at fault (id -> why) when the store knows them:
    it then merged every other message of the batch (``merged``: their transitions)
    but wrote no checkpoint. Empty, the whole call failed: ``service.pipeline``
    splits the batch to find them. Either way it keeps the rest and parks those.
    """

    def __init__(
        self,
        message: str,
        *,
        refused: dict[str, str] | None = None,
        merged: list[Transition] | None = None,
    ) -> None:
        super().__init__(message)
        self.refused = refused or {}
        self.merged = merged or []


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a source has got to, stored atomically with the state it produced.

    ``name`` identifies the source (``kafka:<group>``); ``positions`` maps a
    position key (``<topic>:<partition>``) to the next position to read. A consumer
    that resumes from :meth:`Store.load_checkpoint` therefore never skips an event
    whose effect is not in the store.
    """

    name: str
    positions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """How full the store is, for ses-tracker's own alerts."""

    used_bytes: int
    max_bytes: int | None  # None: no limit set
    evicted: int  # since the store started (Redis: since its last restart)


class Merging(ABC):
    """Merges batches, each with its source's checkpoint, atomically."""

    @abstractmethod
    async def merge(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        counting: Counting | None = None,
    ) -> list[Transition]:
        """Merge a batch; when it returns, the batch (and checkpoint) is durable.

        With ``counting`` (``service.stats.Counting``), what the batch changed is
        counted in the statistics exactly once: each change in the live bucket of
        its own event's time (``EventWrite.bucket``), unless ``counting.live`` is
        off (replays of history), and in the rollups of its event's UTC hour and day
        within ``counting.history_days``. The memory store counts atomically with
        the state; Redis appends what changed to its change log, atomically with the
        state, and its statistics projection applies it (``service.stores.
        projection``: before this returns where this process holds the projection's
        lease, else within the holder's next sweep). Without it, nothing is counted.

        A merge that counts nothing live (``counting.live`` off: history) appends
        nothing to the live transitions stream or the forwarding outbox.

        Raises ``StoreUnavailable`` when the store cannot take it (retry), and
        ``MergeRejected`` when it refuses messages for what they hold (poison:
        retrying fails the same way; the rest may have merged, see there).
        """

    @abstractmethod
    async def load_checkpoint(self, name: str) -> dict[str, str]:
        """Positions last stored under ``name``; empty when there are none."""


class Messages(ABC):
    """Reads merged messages: one by id, or a page of a search."""

    @abstractmethod
    async def get(self, message_id: str) -> MessageRecord | None:
        """The merged record, or None for an unknown or expired message."""

    @abstractmethod
    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of the messages ``query`` matches, newest first (``service.search``)."""


class Statistics(ABC):
    """Reads the statistics the merges counted (``service.stats``)."""

    async def read_stats(
        self, first_bucket: int, last_bucket: int, dimensions: Collection[str] | None = None
    ) -> Counter[str]:
        """The statistics counters of buckets ``first_bucket..last_bucket``, summed."""
        total: Counter[str] = Counter()
        buckets = range(first_bucket, last_bucket + 1, BUCKET_S)
        for counters in await self.read_buckets(buckets, dimensions):
            total.update(counters)
        return total

    @abstractmethod
    async def read_buckets(
        self, buckets: Sequence[int], dimensions: Collection[str] | None = None
    ) -> list[Counter[str]]:
        """The statistics counters of each of ``buckets``, in one read: the overall
        figures and the groups of ``dimensions`` (None: of every dimension; a store
        may return more, never less)."""

    @abstractmethod
    async def read_rollups(
        self, step: str, starts: Sequence[int], fields: Fields | None = None
    ) -> list[Counter[str]]:
        """The history counters of the ``step`` (``hour``/``day``) periods starting at
        each of ``starts`` (epoch seconds), in one read: every field, or at least
        ``fields`` (service.history.Fields; a store may return more)."""

    @abstractmethod
    async def stats_revisions(self) -> Revisions:
        """Which live buckets changed, and when (``service.stats.Revisions``)."""


class Suppressions(ABC):
    """Addresses unsafe to mail again (``service.suppressions``)."""

    @abstractmethod
    async def suppression(self, address: str) -> Suppression | None:
        """Whether ``address`` is unsafe to mail again, and why (``service.suppressions``)."""

    async def suppressions_of(self, addresses: Sequence[str]) -> dict[str, Suppression]:
        """The suppression entries of ``addresses`` (those that have one), in one read
        where the store can batch it (a message lookup asks for all its recipients)."""
        found = {}
        for address in dict.fromkeys(addresses):
            entry = await self.suppression(address)
            if entry is not None:
                found[address] = entry
        return found

    @abstractmethod
    async def suppressions(
        self, reason: str | None, since_ms: int | None, limit: int, after: SuppressionCursor | None
    ) -> tuple[list[Suppression], SuppressionCursor | None]:
        """Suppressed addresses, newest first (by ``since``), one page; the cursor to
        pass as ``after`` for the next, None at the end."""

    @abstractmethod
    async def remove_suppression(self, address: str) -> bool:
        """Forget a suppression (the address is safe again); False when there was none."""


class Erasing(ABC):
    """Forgets a recipient, record by record (``service.erasure_job`` drives it), and
    keeps its tombstone so late events of older messages arrive without it
    (``service.tombstones``)."""

    @abstractmethod
    async def tombstone(self, address: str, at_ms: int) -> int:
        """Remember that ``address`` was erased at ``at_ms`` (the later of two
        erasures wins); from when this returns, no merge stores the address in a
        message sent before that time, and its suppression is gone (one recorded
        later comes from a message sent after). Returns the time kept. Safe to
        repeat."""

    @abstractmethod
    def forgotten(self, address: str, sent_at: int) -> bool:
        """Whether ``address`` was erased after a message sent at ``sent_at`` (ms), as
        this process last read the tombstones (for what leaves the service:
        forwarded changes)."""

    @abstractmethod
    async def refresh_tombstones(self) -> None:
        """Read the tombstones again when another process added one."""

    @abstractmethod
    async def erasure_candidates(self, address: str, before_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` records the address's search index lists for messages sent
        before ``before_ms``, also those whose record let the address go past its
        cap (their events still name it), as ids ``erase_record`` takes. Each one
        erased leaves the index, so asking again gives the next."""

    @abstractmethod
    async def erase_record(self, candidate: str, address: str) -> bool:
        """Take ``address`` out of one record (``service.erasure.erase``) and the
        record out of the address's search index, in one atomic step; whether the
        record named it."""

    @abstractmethod
    async def forget_recipient(self, address: str, before_ms: int) -> int:
        """Drop what is left under the address for messages sent before
        ``before_ms``: its search index entries; how many went. Statistics stay:
        they count per domain and provider, never per address."""


class ErasureJobs(ABC):
    """Where erasure jobs wait and report progress (``service.erasure_job``)."""

    @abstractmethod
    async def save_erasure(self, job_id: str, data: bytes, queued: bool, keep_s: int) -> None:
        """Store a job's state (kept ``keep_s``); ``queued``: still to be worked."""

    @abstractmethod
    async def load_erasure(self, job_id: str) -> bytes | None:
        """A job's state, or None (unknown or expired)."""

    @abstractmethod
    async def queued_erasures(self, limit: int) -> list[str]:
        """Ids of jobs still to be worked, oldest first."""

    @abstractmethod
    async def hold_erasure_lease(self, owner: str, ttl_ms: int) -> bool:
        """Take or renew the lease that lets one process work the jobs at a time."""


class Admin(ABC):
    """Health, capacity and bookkeeping of the store itself."""

    async def ping(self) -> bool:
        """Whether the store can serve requests now."""
        return True

    async def memory(self) -> MemoryFigures | None:
        """How full the store is; None when it cannot say."""
        return None

    @abstractmethod
    async def replayed(self, digest: str) -> bool:
        """Whether a file with this content digest was replayed (``mark_replayed``)."""

    @abstractmethod
    async def mark_replayed(self, digest: str, keep_s: int) -> None:
        """Remember, for ``keep_s``, that a file's events are all durable here: its
        history counts are in, and a second replay would count those of messages
        past the retention again (their records are only held briefly)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""

    def describe(self) -> str:
        return type(self).__name__


class Store(Merging, Messages, Statistics, Suppressions, Erasing, ErasureJobs, Admin):
    """Merged message state, keyed by SES message id: every role above, as each
    backend implements them (a part that needs one role names that role).

    ``merge`` is idempotent and commutative per message (see ``service.state``), so
    replaying a batch after a crash, or two processes merging the same message at
    once, gives the state a single orderly pass would have.
    """
