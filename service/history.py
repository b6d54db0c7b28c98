"""The ``/v1/history`` answer, from hourly and daily rollups (``service.stats``).

Rollups are kept ``SES_TRACKER_HISTORY_DAYS``; a request reads, of the periods in
its range, only those a rollup was written for, and of each only the fields its
answer needs (:class:`Fields`); the range is bounded (:func:`max_periods`, fewer
periods the more slot groups each is split in), and so is the answer: per period,
the ``top`` busiest groups of the range (ranked by recipients sent over the whole
range, so a series keeps its key from point to point) and one ``(other)`` group
holding the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import stats
from service.timestamps import format_ms

ALL = "(all)"
DEFAULT_TOP = 10
MAX_TOP = stats.TOP_GROUPS
# A month of hours, or eleven years of days (the longest SES_TRACKER_HISTORY_DAYS).
MAX_PERIODS = {"hour": 31 * 24, "day": 3_661}
DEFAULT_SPAN_MS = {"hour": 48 * 3_600_000, "day": 30 * 86_400_000}


# Rollup keys (periods x slot groups) one request may read: on a cluster fewer
# periods a request, so the work stays bounded, but never fewer than the floor (the
# status page's 90-day trend, two days of hours).
KEY_BUDGET = 8_192
# The heads of a rollup's overall fields (service.stats.split_groups keeps these).
FIGURE_HEADS = ("c:", "l:", "y:")
MIN_PERIODS = {"hour": 48, "day": 93}
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\^"})


@dataclass(frozen=True, slots=True)
class Fields:
    """The fields of a rollup an answer needs: the overall figures, and the groups of
    ``by`` (none without). A rollup holds up to 100 groups of every dimension, so
    reading only these is most of the saving."""

    by: str | None

    @property
    def name(self) -> str:
        return "" if self.by is None else self.by

    def group_patterns(self) -> list[str]:
        """Redis glob patterns (HSCAN MATCH) that select the groups wanted."""
        if self.by is None:
            return []
        return ["g:" + self.by.translate(_GLOB_SPECIAL) + "=*"]

    def wants(self, field: str) -> bool:
        """The same selection, for a store that filters in Python."""
        if field[:2] in FIGURE_HEADS:
            return True
        return self.by is not None and field.startswith("g:" + self.by + "=")


def max_periods(step: str, groups: int = 1) -> int:
    """The most ``step`` periods one request may span, with ``groups`` slot groups."""
    return max(MIN_PERIODS[step], min(MAX_PERIODS[step], KEY_BUDGET // max(1, groups)))


class RangeError(ValueError):
    """A range the history cannot answer in one request."""


def periods(step: str, since_ms: int, until_ms: int, groups: int = 1) -> list[int]:
    """The starts (epoch seconds) of the ``step`` periods overlapping
    ``[since_ms, until_ms)`` (at most :func:`max_periods` of them)."""
    if until_ms <= since_ms:
        raise RangeError("until must be after since")
    step_ms = stats.STEPS[step] * 1000
    first = since_ms // step_ms
    last = (until_ms - 1) // step_ms
    count = last - first + 1
    cap = max_periods(step, groups)
    if count > cap:
        raise RangeError(f"at most {cap} {step}s a request, this range spans {count}")
    return [n * stats.STEPS[step] for n in range(first, last + 1)]


def points(
    starts: Sequence[int],
    rollups: Sequence[Counter[str]],
    by: str | None,
    top: int = DEFAULT_TOP,
) -> list[dict[str, Any]]:
    """One point per period with data, and per group when broken down ``by`` a
    dimension; periods nothing was counted in are left out."""
    if by is None:
        return [
            _point(start, ALL, stats.split_groups(rollup)[0])
            for start, rollup in zip(starts, rollups, strict=True)
            if rollup
        ]
    per_period = [stats.split_groups(rollup)[1].get(by, {}) for rollup in rollups]
    sent: Counter[str] = Counter()
    for groups in per_period:
        for key, fields in groups.items():
            if key != stats.OTHER:
                sent[key] += fields.get("c:sent", 0)
    kept = {key for key, _ in sorted(sent.items(), key=lambda kv: (-kv[1], kv[0]))[:top]}
    answer = []
    for start, groups in zip(starts, per_period, strict=True):
        rest: Counter[str] = Counter()
        for key in sorted(groups, key=lambda k: (-groups[k].get("c:sent", 0), k)):
            if key in kept:
                answer.append(_point(start, key, groups[key]))
            else:
                rest.update(groups[key])
        if rest:
            answer.append(_point(start, stats.OTHER, rest))
    return answer


def _point(start_s: int, key: str, fields: Counter[str]) -> dict[str, Any]:
    section = stats.section(fields, stats.history_value_of)
    return {"at": format_ms(start_s * 1000), "key": key, **section}
