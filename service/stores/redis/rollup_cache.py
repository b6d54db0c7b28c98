"""Closed history periods, kept in process (``RedisStore.read_rollups``).

A rollup stops changing once its period is over and the merges have caught up with
it, so a period that ended more than :data:`CLOSED_AFTER_S` ago is read from Redis
once and answered from here after: the status page asks for 90 days every minute,
and a cluster would otherwise read each of them from every slot group each time.
An entry also lasts at most ``max_age_s``, so what a replay or a long backlog adds
to an old period shows within that. Bounded by an estimate of the bytes held,
least recently used first out. Pure: the caller passes the time.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

# A period this long past its end is closed: the ingestion backlog it allows for.
CLOSED_AFTER_S = 3_600
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_AGE_S = 900
# Per field: the key's characters plus a Counter slot and an int, roughly.
_FIELD_OVERHEAD = 120
_ENTRY_OVERHEAD = 400

Key = tuple[str, int, str]  # step, period start (s), which fields (history.Fields.name)


def closed(step_s: int, start_s: int, now_s: float) -> bool:
    return start_s + step_s + CLOSED_AFTER_S <= now_s


def size_of(counters: Counter[str]) -> int:
    return _ENTRY_OVERHEAD + sum(len(field) + _FIELD_OVERHEAD for field in counters)


class ClosedPeriods:
    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_age_s: float = DEFAULT_MAX_AGE_S
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.bytes = 0
        self._entries: OrderedDict[Key, tuple[float, int, Counter[str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, now_s: float) -> Counter[str] | None:
        """A copy: callers may change what they get."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, size, counters = entry
        if now_s - stored_at > self.max_age_s:
            del self._entries[key]
            self.bytes -= size
            return None
        self._entries.move_to_end(key)
        return Counter(counters)

    def put(self, key: Key, counters: Counter[str], now_s: float) -> None:
        size = size_of(counters)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (now_s, size, Counter(counters))
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped, _) = self._entries.popitem(last=False)
            self.bytes -= dropped
