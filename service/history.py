"""The ``/v1/history`` answer, from hourly and daily rollups (``service.stats``).

Rollups are kept ``SES_TRACKER_HISTORY_DAYS``; a request reads one rollup per
period in its range (one pipelined read), so the range is bounded
(:data:`MAX_PERIODS`), and so is the answer: per period, the ``top`` busiest groups
of the range (ranked by recipients sent over the whole range, so a series keeps its
key from point to point) and one ``(other)`` group holding the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from service import stats
from service.timestamps import format_ms

ALL = "(all)"
DEFAULT_TOP = 10
MAX_TOP = stats.TOP_GROUPS
# A month of hours, or eleven years of days (the longest SES_TRACKER_HISTORY_DAYS).
MAX_PERIODS = {"hour": 31 * 24, "day": 3_661}
DEFAULT_SPAN_MS = {"hour": 48 * 3_600_000, "day": 30 * 86_400_000}


class RangeError(ValueError):
    """A range the history cannot answer in one request."""


def periods(step: str, since_ms: int, until_ms: int) -> list[int]:
    """The starts (epoch seconds) of the ``step`` periods overlapping
    ``[since_ms, until_ms)``."""
    if until_ms <= since_ms:
        raise RangeError("until must be after since")
    step_ms = stats.STEPS[step] * 1000
    first = since_ms // step_ms
    last = (until_ms - 1) // step_ms
    count = last - first + 1
    if count > MAX_PERIODS[step]:
        raise RangeError(f"at most {MAX_PERIODS[step]} {step}s a request, this range spans {count}")
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
