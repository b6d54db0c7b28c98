"""The one interface every state store implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.search import SearchPage, SearchQuery
from service.state import MessageRecord, MessageWrite, Transition


class StoreUnavailable(Exception):
    """The store cannot be reached; the caller should retry later, nothing was lost."""


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


class Store(ABC):
    """Merged message state, keyed by SES message id.

    ``merge`` is idempotent and commutative per message (see ``service.state``), so
    replaying a batch after a crash, or two processes merging the same message at
    once, gives the state a single orderly pass would have.
    """

    @abstractmethod
    async def merge(
        self,
        writes: Sequence[MessageWrite],
        checkpoint: Checkpoint | None = None,
        stats_bucket: int | None = None,
    ) -> list[Transition]:
        """Merge a batch; when it returns, the batch (and checkpoint) is durable.

        With ``stats_bucket`` (see ``service.stats``), what the batch changed is
        counted in that time bucket, atomically with the state.
        """

    @abstractmethod
    async def read_stats(self, first_bucket: int, last_bucket: int) -> Counter[str]:
        """The statistics counters of buckets ``first_bucket..last_bucket``, summed."""

    @abstractmethod
    async def get(self, message_id: str) -> MessageRecord | None:
        """The merged record, or None for an unknown or expired message."""

    @abstractmethod
    async def search(self, query: SearchQuery) -> SearchPage:
        """One page of the messages ``query`` matches, newest first (``service.search``)."""

    @abstractmethod
    async def load_checkpoint(self, name: str) -> dict[str, str]:
        """Positions last stored under ``name``; empty when there are none."""

    async def ping(self) -> bool:
        """Whether the store can serve requests now."""
        return True

    async def memory(self) -> MemoryFigures | None:
        """How full the store is; None when it cannot say."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""

    def describe(self) -> str:
        return type(self).__name__
