"""Search over merged messages: what a query means, and how pages are cut.

Order is newest first by send time (``mail.timestamp`` as first seen), ties broken
by the message's handle, so the order is total and a cursor can resume exactly
after the last message a page returned, however the data changes in between.

Pure: both stores share these definitions. The memory store answers by scanning
its records (it is bounded, and the scan is the reference the Redis indexes are
tested against); the Redis store walks secondary indexes kept by its merge.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from service import state
from service.addresses import normalize_address
from service.codec import Header, decode_event, decode_header
from service.dimensions import NONE, domain_of, first_value, identity_from
from service.events import EventType
from service.providers import provider_of_domain
from service.state import MessageRecord

# Statuses whose messages the Redis store keeps in an index of their own: rare,
# and what people search for. `sent` and `delayed` share the pending index (a
# message with any recipient still waiting); `delivered` is most of the traffic
# and is found through the index by send time.
PROBLEM_STATUSES: tuple[str, ...] = ("bounced", "complained", "rejected", "rendering_failed")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Records one page may examine before it returns what it has (with a cursor): a
# query whose filter matches almost nothing must not hold the store for long.
SCAN_BUDGET = 5_000


class IndexKind:
    """Which index answers a query (see :meth:`SearchQuery.index`)."""

    RECIPIENT = "recipient"  # the recipient's messages
    STATUS = "status"  # messages in one problem status
    PENDING = "pending"  # messages with a recipient still waiting
    ALL = "all"  # every message, by send time


class CursorError(ValueError):
    """A cursor this service did not write."""


def message_handle(message_id: str) -> str:
    """A short, fixed-size stand-in for a message id, used in keys and indexes.

    SES message ids run to 60 characters; indexes hold one entry per message and
    recipient, so 16 characters (96 bits, collision odds ~1e-15 at 14 days of 1M
    messages a day) keep them within the per-message footprint budget.
    """
    digest = hashlib.blake2b(message_id.encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode()


def rollup(record: MessageRecord) -> tuple[int, bool]:
    """The message's status code, and whether it waits on an outcome.

    Waiting means a recipient still sent or delayed (or the message itself so, when
    it has no recipients). The Redis pending index holds exactly these messages
    (``merge.lua``'s twin ``rollup``).
    """
    codes = record.status_codes()
    top = max(codes, default=state.status_of(record.message_flags))
    return top, top <= state.DELAYED or any(code <= state.DELAYED for code in codes)


def is_pending(record: MessageRecord) -> bool:
    return rollup(record)[1]


def recipient_key(address: str) -> str:
    """How a searched-for recipient is matched: as the parser stores recipients."""
    return normalize_address(address)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message sits in the search order."""

    sent_at: int
    handle: str


@dataclass(frozen=True, slots=True)
class SearchQuery:
    recipient: str | None = None
    status: str | None = None
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    limit: int = DEFAULT_LIMIT
    after: Position | None = None  # resume strictly after this position
    # Only messages with a recipient still waiting (is_pending); with until_ms set
    # to now minus the overdue threshold, these are the overdue messages.
    waiting: bool = False
    # Dimensions (service.dimensions), checked against each candidate record: the
    # message's configuration set, identity or tag (NAME, VALUE); a recipient in the
    # domain or at the provider; a bounce of the type (Permanent, Transient,
    # Undetermined). "(none)" matches a message without the value.
    configuration_set: str | None = None
    identity: str | None = None
    tag: tuple[str, str] | None = None
    domain: str | None = None
    provider: str | None = None
    bounce_type: str | None = None
    # Providers found from MX records (service.mx), beside the shipped map: what
    # the provider filter reads for company domains.
    resolved: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in state.STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")

    def index(self) -> tuple[str, str | None]:
        """The narrowest index holding every match, as (IndexKind, its key or None).

        Both stores pick their index here, so they agree on what each one covers.
        """
        if self.recipient is not None:
            return IndexKind.RECIPIENT, recipient_key(self.recipient)
        if self.status in PROBLEM_STATUSES:
            return IndexKind.STATUS, self.status
        if self.waiting or self.status in ("sent", "delayed"):
            return IndexKind.PENDING, None
        return IndexKind.ALL, None

    def admits(self, position: Position) -> bool:
        """Whether ``position`` is inside the time range and before the cursor."""
        if self.since_ms is not None and position.sent_at < self.since_ms:
            return False
        if self.until_ms is not None and position.sent_at >= self.until_ms:
            return False
        return self.after is None or position < self.after

    def matches(self, record: MessageRecord) -> bool:
        """Whether a record passes every filter."""
        if self.waiting and not is_pending(record):
            return False
        if self.recipient is None:
            if self.status is not None and record.status() != self.status:
                return False
        else:
            wanted = recipient_key(self.recipient)
            if wanted not in record.recipients:
                return False
            if self.status is not None and record.recipient_status(wanted) != self.status:
                return False
        return not self.has_dimensions() or self._matches_dimensions(record)

    def has_dimensions(self) -> bool:
        return any(
            value is not None
            for value in (
                self.configuration_set,
                self.identity,
                self.tag,
                self.domain,
                self.provider,
                self.bounce_type,
            )
        )

    def _matches_dimensions(self, record: MessageRecord) -> bool:
        # The costlier checks (decoding the header, then the events) come last.
        if self.domain is not None and not any(
            domain_of(address) == self.domain for address in record.recipients
        ):
            return False
        if self.provider is not None and not any(
            provider_of_domain(domain_of(address), self.resolved) == self.provider
            for address in record.recipients
        ):
            return False
        if self.configuration_set is not None or self.identity is not None or self.tag is not None:
            header = decode_header(record.header) or Header(None, None, None, {})
            if (
                self.configuration_set is not None
                and (header.configuration_set or NONE) != self.configuration_set
            ):
                return False
            if self.identity is not None and (
                identity_from(header.tags, header.source) != self.identity
            ):
                return False
            if (
                self.tag is not None
                and (first_value(header.tags.get(self.tag[0])) or NONE) != self.tag[1]
            ):
                return False
        if self.bounce_type is not None:
            return any(
                name.startswith("e")
                and (event := decode_event(blob)).type is EventType.BOUNCE
                and event.details.get("bounce_type") == self.bounce_type
                for name, blob in record.blobs.items()
            )
        return True


@dataclass(frozen=True, slots=True)
class SearchHit:
    message_id: str
    position: Position
    record: MessageRecord


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]
    # Set when more may follow: the position of the last message examined, which
    # can be past the last hit when the scan budget ran out.
    next_after: Position | None


async def pages(
    search: Callable[[SearchQuery], Awaitable[SearchPage]], query: SearchQuery
) -> AsyncIterator[list[SearchHit]]:
    """Every match of ``query`` (``search`` is a store's), a page of up to
    ``MAX_LIMIT`` at a time, newest first: the walk an export, a recipient profile
    and an erasure make. Pages the scan budget left empty are not yielded."""
    query = dataclasses.replace(query, limit=MAX_LIMIT)
    while True:
        page = await search(query)
        if page.hits:
            yield page.hits
        if page.next_after is None:
            return
        query = dataclasses.replace(query, after=page.next_after)


def pack_cursor(number: int, text: str) -> str:
    """A page's end as an opaque token: where it stopped in a (number, text) order."""
    raw = f"{number}.{text}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        number, text = raw.split(".", 1)
        return int(number), text
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError("cursor is not one this service returned") from exc


def encode_cursor(position: Position) -> str:
    return pack_cursor(position.sent_at, position.handle)


def decode_cursor(cursor: str) -> Position:
    position = Position(*unpack_cursor(cursor))
    if len(position.handle) != 16:
        raise CursorError("cursor is not one this service returned")
    return position
