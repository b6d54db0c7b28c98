"""Records released when their time comes: what the simulator and loadgen share.

A message's events are made at once but become visible over seconds (a delivery a
second after its send, a bounce later); both traffic sources hold them here and
take what is due on each tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any


class Schedule:
    def __init__(self) -> None:
        # (due ms, sequence, record): the sequence keeps ties in the order added.
        self._pending: list[tuple[int, int, dict[str, Any]]] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, events: Iterable[tuple[int, dict[str, Any]]]) -> None:
        for due_ms, record in events:
            self._sequence += 1
            heapq.heappush(self._pending, (due_ms, self._sequence, record))

    def due(self, now_ms: int | None, limit: int | None = None) -> list[dict[str, Any]]:
        """Records due by ``now_ms`` (all with None), earliest first, at most ``limit``."""
        taken: list[dict[str, Any]] = []
        pending = self._pending
        while pending and (now_ms is None or pending[0][0] <= now_ms):
            taken.append(heapq.heappop(pending)[2])
            if limit is not None and len(taken) == limit:
                break
        return taken
