"""How far behind real time a source is, by the events' own time.

Record counts (Kafka lag) say how much is waiting, not how old it is; an operator
and the alert evaluator need the second: "this partition is reading mail from 52
minutes ago". For each position of a source (a Kafka partition, an SQS queue, an
HTTP endpoint) this keeps the newest event time read and whether more was waiting
after the read:

* while more waits, the lag is the wall clock minus that newest event time, and
  grows as long as the source does not catch up;
* once a read leaves nothing waiting, the lag is frozen at the age the freshest
  event had when it was read (Firehose's buffering, SNS's delivery delay), so a
  topic that is quiet at night does not look hours behind. A source that stops
  reading with work waiting is reported as stalled, separately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.events import SesEvent

# A source further behind than this, by event time, is catching up (README, Live
# figures by event time): the page says so and alerts hold their resolution.
DEFAULT_CATCH_UP_S = 900.0


@dataclass(slots=True)
class _Position:
    newest_ms: int
    read_at_ms: int  # when the lag was last taken (newer events, or caught up)
    behind: bool
    last_read_ms: int  # when anything was last read from it


def newest_event_ms(events: Iterable[SesEvent]) -> int | None:
    """The newest event time among ``events``; None when there are none."""
    return max((event.at for event in events), default=None)


class EventLag:
    """``forget_after_s``: drop a position nothing was read from for that long. For
    pushes (HTTP), which never say whether more is coming: a Firehose backlog
    redelivered, or one old event posted by hand, must not read as "behind" ever
    after."""

    def __init__(self, clock_ms: Callable[[], int], forget_after_s: float | None = None) -> None:
        self._clock_ms = clock_ms
        self._positions: dict[str, _Position] = {}
        self._forget_after_ms = None if forget_after_s is None else int(forget_after_s * 1000)

    def read(self, position: str, newest_ms: int | None, behind: bool) -> None:
        """Note a read from ``position``: its newest event time (None: no events)
        and whether more was waiting after it."""
        now_ms = self._clock_ms()
        known = self._positions.get(position)
        if known is None:
            if newest_ms is None:
                return
            self._positions[position] = _Position(newest_ms, now_ms, behind, now_ms)
            return
        known.last_read_ms = now_ms
        if newest_ms is not None and newest_ms > known.newest_ms:
            known.newest_ms = newest_ms
            known.read_at_ms = now_ms
        elif not behind and known.behind:
            known.read_at_ms = now_ms  # caught up now: freeze the lag at this read
        known.behind = behind

    def forget(self, position: str) -> None:
        """A position this replica no longer reads (a Kafka partition revoked)."""
        self._positions.pop(position, None)

    def seconds(self) -> dict[str, float]:
        """Each position's lag in seconds (never negative)."""
        now_ms = self._clock_ms()
        if self._forget_after_ms is not None:
            quiet_since = now_ms - self._forget_after_ms
            for position in [k for k, p in self._positions.items() if p.last_read_ms < quiet_since]:
                del self._positions[position]
        return {
            position: round(max(0, (now_ms if p.behind else p.read_at_ms) - p.newest_ms) / 1000, 1)
            for position, p in sorted(self._positions.items())
        }
