"""Timestamps as SES writes them, read into integer epoch milliseconds (UTC).

SES uses ISO-8601 with a ``Z`` (``2016-01-27T14:59:38.237Z``), numeric offsets
(``2020-06-16T03:15:40.641+03:00``) and, in old notifications, the form
``2018-10-08T14:05:45 +0000``. Every one of them must give the same instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

# Epoch millisecond values this codebase treats as plausible; anything outside is
# almost certainly a unit mistake (seconds, microseconds) rather than a real date.
_MIN_MS = 946_684_800_000  # 2000-01-01
_MAX_MS = 7_258_118_400_000  # 2200-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class TimestampError(ValueError):
    """A value that is not a timestamp SES could have written."""


def parse_ms(value: object) -> int:
    """Return epoch milliseconds for an SES timestamp string."""
    if not isinstance(value, str):
        raise TimestampError(f"expected a timestamp string, got {type(value).__name__}")
    return _parse_text(value)


# Every event of a message repeats its mail.timestamp; a small cache saves the
# datetime round trip for all but the first.
@lru_cache(maxsize=4096)
def _parse_text(value: str) -> int:
    text = value.strip()
    if len(text) < 10 or len(text) > 40:
        raise TimestampError(f"not a timestamp: {value[:40]!r}")
    # The legacy notification form: a space before a +HHMM offset.
    if len(text) > 6 and text[-6] == " " and text[-5] in "+-":
        text = f"{text[:-6]}{text[-5:-2]}:{text[-2:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(f"not a timestamp: {value[:40]!r}") from None
    if moment.tzinfo is None:
        # SES always sends UTC; a bare timestamp is read as UTC, not local time.
        moment = moment.replace(tzinfo=UTC)
    ms = (moment - _EPOCH) // _ONE_MS
    if not _MIN_MS <= ms <= _MAX_MS:
        raise TimestampError(f"timestamp out of range: {value[:40]!r}")
    return ms


def format_ms(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the API's one time format."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ms_cache_clear() -> None:
    """Forget cached timestamps (for memory measurements)."""
    _parse_text.cache_clear()
