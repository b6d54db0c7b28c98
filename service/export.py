"""Every message a search matches, as CSV or NDJSON, in constant memory.

The search is walked page by page (each page bounded by ``search.SCAN_BUDGET``
records examined) and each page is written out before the next is read, so an
export of millions of messages holds one page at a time, whichever store answers.

CSV has one row per recipient (what a spreadsheet filters on). Cells come from
senders and recipients (subjects, addresses, tag values), so any cell a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return) is written with a leading apostrophe, OWASP's advice for CSV
injection.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from service.codec import Header, decode_header
from service.dimensions import identity_from
from service.search import SearchHit, SearchQuery, pages
from service.stores.base import Store
from service.timestamps import format_ms
from service.view import ViewOptions, message_summary

FORMATS = ("csv", "ndjson")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}
CSV_COLUMNS = (
    "message_id",
    "sent_at",
    "status",
    "recipient",
    "recipient_status",
    "source",
    "identity",
    "configuration_set",
    "subject",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


async def export_lines(
    store: Store, query: SearchQuery, fmt: str, options: ViewOptions
) -> AsyncIterator[bytes]:
    """The export of ``query`` in ``fmt``, one chunk of lines per page (the CSV
    header first)."""
    if fmt == "csv":
        yield csv_lines([CSV_COLUMNS])
    async for hits in pages(store.search, query):
        if fmt == "csv":
            yield csv_lines(row for hit in hits for row in csv_rows(hit))
        else:
            yield b"".join(
                orjson.dumps(message_summary(hit.message_id, hit.record, options)) + b"\n"
                for hit in hits
            )


def csv_rows(hit: SearchHit) -> list[list[Any]]:
    record = hit.record
    header = decode_header(record.header) or Header(None, None, None, {})
    common = (
        hit.message_id,
        format_ms(header.sent_at) if header.sent_at else "",
        record.status(),
    )
    rest = (
        header.source or "",
        identity_from(header.tags, header.source),
        header.configuration_set or "",
        header.subject or "",
    )
    return [
        [*common, address, record.recipient_status(address), *rest]
        for address in sorted(record.recipients)
    ] or [[*common, "", "", *rest]]


def csv_lines(rows: Iterable[Iterable[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue().encode()


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
