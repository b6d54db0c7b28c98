"""One parser for every shape SES events arrive in.

``parse_payload(body)`` takes the raw bytes of a Kafka record, an SQS message body,
an HTTP request or a saved file and returns a :class:`ParseResult`. It understands:

* SES event-publishing records (``eventType``) and SES notifications
  (``notificationType``);
* either of those inside an SNS envelope, a Lambda-style SNS event
  (``{"Records": [{"EventSource": "aws:sns", "Sns": {...}}]}``) or an EventBridge
  event (``"source": "aws.ses"``, ``detail``);
* EventBridge account-level events (``Sending Status Disabled`` ...);
* several records in one payload: a JSON array, newline-delimited JSON (junk lines
  among the records rejected one by one, see ``_lines``), or objects written back
  to back as Firehose does.

A bad record is reported with its index, the byte it begins at (where the framing
knows it), a reason code from a closed set (:class:`service.events.Reason`) and a
text that names the offending field; it never stops the records around it. A
recipient that is not an address (:mod:`service.addresses`) is dropped from its
event and counted (``bad_address``); the record is rejected only when no recipient
is left.

Hostile input costs bounded, linear work: every shape, broken ones included, is
read in time linear in its bytes (see ``_concatenated``), nesting is bounded, and
only the first :data:`service.events.MAX_ISSUES_KEPT` issues are kept (all are
counted). Lists and strings that a record could grow without limit are capped
(recipients per event, detail strings, tags), and an event dated further ahead of
the wall clock than the caller allows (``latest_ms``) is rejected: a forged future
event would otherwise pin state and alerts for ever. ``mail.messageId`` is the message key, never
``commonHeaders.messageId`` (that one is the sender's own header and is not unique).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson

from service.addresses import MAX_ADDRESS_CHARS as MAX_ADDRESS_CHARS
from service.addresses import read_address
from service.events import (
    AccountEvent,
    EventType,
    MailInfo,
    ParseResult,
    Reason,
    SesEvent,
)
from service.timestamps import TimestampError, parse_ms

DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
# SNS caps a message at 256 KiB and Firehose a record at 1,000 KiB; SES events with
# full headers stay well below both. Anything larger is not an SES event.
MAX_RECORD_BYTES = 1024 * 1024
# An SES record takes hundreds of bytes, so a full 8 MiB body holds well under this;
# a body of a million tiny items ([1,1,...]) is not read past it.
MAX_RECORDS_PER_PAYLOAD = 100_000
MAX_MESSAGE_ID_CHARS = 256
# mail.source may carry a display name ("Jane" <jane@x>): cut, not validated.
MAX_SOURCE_CHARS = 320
# SES allows 50 recipients a message. An event naming more keeps the 50 smallest
# addresses (whatever the list's order, so every copy of the event keeps the same
# ones), counts the rest in ParseResult.dropped (too_many) and marks the message
# truncated: each address named is work inside the store's merge (its cost model,
# service.stores.redis.merge_cost, counts on this bound).
MAX_RECIPIENTS = 50
MAX_SUBJECT_CHARS = 256
MAX_TAGS = 50
MAX_TAG_CHARS = 256  # SES's own limit on a tag's name and value
MAX_TAG_VALUES = 5
# Detail strings are cut (not refused) to these lengths; the rest are MAX_DETAIL_CHARS.
MAX_DETAIL_CHARS = 256
DETAIL_CHARS: dict[str, int] = {
    "diagnosticCode": 1_000,
    "smtpResponse": 1_000,
    "errorMessage": 1_000,
    "reason": 500,
    "link": 2_000,
    "userAgent": 500,
}

_EVENT_TYPES: dict[str, EventType] = {
    "Send": EventType.SEND,
    "Reject": EventType.REJECT,
    "Bounce": EventType.BOUNCE,
    "Complaint": EventType.COMPLAINT,
    "Delivery": EventType.DELIVERY,
    "Open": EventType.OPEN,
    "Click": EventType.CLICK,
    "Rendering Failure": EventType.RENDERING_FAILURE,
    "DeliveryDelay": EventType.DELIVERY_DELAY,
}
_NOTIFICATION_TYPES: dict[str, EventType] = {
    "Bounce": EventType.BOUNCE,
    "Complaint": EventType.COMPLAINT,
    "Delivery": EventType.DELIVERY,
}
_NO_STATE_NOTIFICATIONS: dict[str, str] = {
    "Received": "inbound mail notification (Received) carries no sending state",
    "AmazonSnsSubscriptionSucceeded": "SES subscription notice carries no delivery state",
}
_TIMED_BY_MAIL = (EventType.SEND, EventType.REJECT, EventType.RENDERING_FAILURE)
# Events whose recipients are mail.destination: one whose destination named only
# non-addresses has no recipient left and is rejected (bad_address).
_BY_DESTINATION = frozenset({*_TIMED_BY_MAIL, EventType.OPEN, EventType.CLICK})
_ACCOUNT_DETAIL_TYPES = ("Sending Status Disabled", "Sending Status Enabled")
_ACCOUNT_DETAIL_PREFIX = "Advisor Recommendation Status"


class RecordError(ValueError):
    """The record is malformed; the message says which field and why."""

    def __init__(self, code: Reason, message: str) -> None:
        super().__init__(message)
        self.code = code


class NoDeliveryState(Exception):
    """The record is well formed but says nothing about a message's delivery."""


def parse_payload(
    body: bytes | str,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    latest_ms: int | None = None,
) -> ParseResult:
    """Parse every record in ``body``; see the module docstring for the shapes.

    ``latest_ms``: the newest event time accepted (epoch ms; the wall clock plus the
    allowed skew). None accepts any time, for callers that have no clock to trust.
    """
    result = ParseResult()
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > max_bytes:
        result.records = 1
        result.reject(
            0, Reason.TOO_LARGE, f"payload is {len(raw)} bytes, over the {max_bytes}-byte limit"
        )
        return result
    for index, (offset, document) in enumerate(_documents(raw, result)):
        if index == MAX_RECORDS_PER_PAYLOAD:
            _reject_rest(result)
            break
        result.records += 1
        kept = len(result.rejected)
        if isinstance(document, _Broken):
            reason = document.reason
            if document.more:
                reason += f" (and the {document.more} broken pieces after it)"
            result.reject(index, document.code, reason)
        elif type(document) is not dict:
            # No exception per item: a body can hold millions of them ([1,1,1...]).
            result.reject(index, Reason.NOT_OBJECT, _NOT_AN_OBJECT[_kind(document)])
        else:
            _parse_document(document, index, result, latest_ms)
        if offset is not None and len(result.rejected) > kept:
            _locate(result, kept, offset)
    if result.records == 0:
        result.records = 1
        result.reject(0, Reason.EMPTY, "empty payload: no JSON record found")
    return result


# ---------------------------------------------------------------------------
# Splitting a payload into JSON documents


def _locate(result: ParseResult, kept: int, offset: int) -> None:
    """Say where the record whose issues start at ``result.rejected[kept]`` begins."""
    result.rejected[kept:] = [replace(issue, offset=offset) for issue in result.rejected[kept:]]


class _Broken:
    """Text that is not a record; ``more`` counts further broken pieces run into it."""

    __slots__ = ("code", "more", "reason")

    def __init__(self, code: Reason, reason: str) -> None:
        self.code = code
        self.reason = reason
        self.more = 0


def _reject_rest(result: ParseResult) -> None:
    """Past the record cap: the rest counted as one rejection, not read."""
    result.records += 1
    result.reject(
        MAX_RECORDS_PER_PAYLOAD,
        Reason.TOO_MANY,
        f"payload holds over {MAX_RECORDS_PER_PAYLOAD} records; the rest were not read",
    )


# Each document with the byte where it begins (None inside a JSON array).
Located = tuple[int | None, Any]


def _documents(raw: bytes, result: ParseResult) -> Iterator[Located]:
    result.scanned += len(raw)
    try:
        whole = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if isinstance(whole, list):
            for document in whole:
                yield None, document
        else:
            first = _CONTENT.search(raw)
            yield (first.start() if first else 0), whole
        return
    result.scanned += len(raw)
    lines = _lines(raw)
    if lines is None:
        yield from _concatenated(raw, result)
        return
    for begin, document in lines:
        if type(document) is _Line:
            # Parsed only now: a body of millions of junk lines is not read past
            # the record cap, one failed parse (an exception) each.
            yield begin, _junk_line(document.text, begin)
        else:
            yield begin, document


# Where each line holding more than JSON's white space starts its content (a line
# "\f{...}" is junk, not an object). Linear: every match is anchored on a newline.
_FILLED_LINE = re.compile(rb"(?:\A|\n)[ \t\r]*([^ \t\r\n])")


class _Line:
    """A line that does not open an object, read when its turn comes."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


def _lines(raw: bytes) -> list[tuple[int, Any]] | None:
    """One record a line (NDJSON), junk lines included; None when that framing fails.

    Every non-blank line that opens with ``{`` must parse as a JSON object; the other
    lines are records of their own, each rejected on its own (or, being JSON, judged
    as any record), so a junk line never costs its neighbours. Without any line
    opening an object, every line must parse. Otherwise the payload is not one
    record a line (a pretty-printed record, a record run into the next) and the
    concatenated framing reads it. Past the record cap the rest is not looked at.
    """
    framed: list[tuple[int, Any]] = []
    opened = False
    # Only lines holding more than white space are visited, so a body of millions
    # of blank lines costs one C-level pass, not a Python step each.
    for filled in _FILLED_LINE.finditer(raw):
        begin = filled.start(1)
        end = raw.find(b"\n", begin)
        line = raw[begin : end if end >= 0 else len(raw)]
        if line[:1] == b"{":
            try:
                framed.append((begin, orjson.loads(line)))
            except orjson.JSONDecodeError:
                return None
            opened = True
        else:
            framed.append((begin, _Line(line)))
        if len(framed) > MAX_RECORDS_PER_PAYLOAD:
            break
    if opened:
        return framed
    try:
        # Newline-delimited JSON values that are not objects: each judged as a record.
        return [(begin, orjson.loads(line.text)) for begin, line in framed]
    except orjson.JSONDecodeError:
        return None


def _junk_line(text: bytes, begin: int) -> Any:
    """A line that does not open an object: its JSON value, or why it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _Broken(Reason.NOT_UTF8, f"not UTF-8 text at byte {begin + exc.start}")
        return _broken(begin, error)


# Where a record may begin: a "{" (or "[") right after a "}" (or "]"), white space
# between allowed: that is never valid inside one document, so it splits Firehose's
# compact ``}{``; or at the start of a line (pretty-printed and newline-separated).
_START = re.compile(rb"[}\]][ \t\r\n]*[{\[]|\n[{\[]")
# An object opening with a key only a top-level record has: where a record cut off
# mid-value, which swallowed the next one, is searched for that next one.
_OPENER = re.compile(rb'\{"(?:eventType|notificationType|Type|version|Records|source)"')
_CONTENT = re.compile(rb"[^ \t\r\n]")
# Recovery (joining pieces a "}{" inside a string split apart, finding a record a
# truncated one swallowed) may read text again, at most this many times the payload
# in all; past that every piece is read once, so the work stays linear.
_RECOVERY_FACTOR = 1
_MAX_JOINED = 8
# No SES record is shorter (mail.messageId and mail.timestamp alone take more). The
# first few shorter pieces are parsed, for a precise error; past that they are not
# worth a parse each, which hostile input could ask for millions of times.
_MIN_RECORD_BYTES = 48
_SHORT_PIECES_PARSED = 1_000


def _concatenated(raw: bytes, result: ParseResult) -> Iterator[Located]:
    """Objects back to back, compact or pretty-printed, with or without newlines.

    Firehose writes ``{...}{...}``; saved files often hold pretty-printed objects
    one after another. The payload is cut where a record may start (``_START``, one
    linear pass) and each piece is parsed on its own. A piece that is not JSON is
    joined to the pieces after it (a string may hold ``}{``), then searched for a
    record it swallowed (``_OPENER``); a run of broken pieces is reported once.
    Parsing a piece is linear in its length, and recovery reads at most
    ``_RECOVERY_FACTOR`` times the payload again, so input of any shape costs
    linear work.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield 0, _Broken(Reason.NOT_UTF8, f"not UTF-8 text at byte {exc.start}")
        return
    first = _CONTENT.search(raw)
    if first is None:
        return
    starts = [first.start()]
    starts.extend(m.end() - 1 for m in _START.finditer(raw, first.start() + 1))
    starts.append(len(raw))
    budget = [_RECOVERY_FACTOR * len(raw) + 65_536]
    broken: _Broken | None = None
    broken_at = 0
    short_tries = _SHORT_PIECES_PARSED
    piece, last = 0, len(starts) - 1
    while piece < last:
        begin, end = starts[piece], starts[piece + 1]
        result.scanned += end - begin
        error: orjson.JSONDecodeError | None = None
        short = end - begin < _MIN_RECORD_BYTES
        if short:
            short_tries -= 1
        if not short or short_tries >= 0:
            try:
                document = orjson.loads(raw[begin:end])
            except orjson.JSONDecodeError as exc:
                error = exc
            else:
                piece += 1
                if broken is not None:
                    yield broken_at, broken
                    broken = None
                yield begin, document
                continue
        document, at = _NOTHING, begin
        if budget[0] > 0:
            document, piece = _rejoined(raw, starts, piece, budget, result)
        else:
            piece += 1
        if document is _NOTHING:
            if broken is None:
                broken, broken_at = _broken(begin, error), begin
            else:
                broken.more += 1
            if error is None or budget[0] <= 0:
                continue
            document, at = _swallowed(raw, begin, end, budget, result)
            if document is _NOTHING:
                continue
        if broken is not None:
            yield broken_at, broken
            broken = None
        yield at, document
    if broken is not None:
        yield broken_at, broken


_NOTHING = object()


def _rejoined(
    raw: bytes, starts: list[int], piece: int, budget: list[int], result: ParseResult
) -> tuple[Any, int]:
    """The piece joined to the next few (a "}{" inside a string split a record)."""
    begin = starts[piece]
    for joined in range(piece + 2, min(len(starts), piece + _MAX_JOINED + 1)):
        if budget[0] <= 0:
            break
        budget[0] -= starts[joined] - begin
        result.scanned += starts[joined] - begin
        try:
            return orjson.loads(raw[begin : starts[joined]]), joined
        except orjson.JSONDecodeError:
            continue
    return _NOTHING, piece + 1


def _swallowed(
    raw: bytes, begin: int, end: int, budget: list[int], result: ParseResult
) -> tuple[Any, int]:
    """The record a broken piece swallowed (the first that parses) and where it
    begins, or _NOTHING."""
    for opener in _OPENER.finditer(raw, begin + 1, end):
        if budget[0] <= 0:
            break
        budget[0] -= end - opener.start()
        result.scanned += end - opener.start()
        try:
            return orjson.loads(raw[opener.start() : end]), opener.start()
        except orjson.JSONDecodeError:
            continue
    return _NOTHING, begin


def _broken(begin: int, error: orjson.JSONDecodeError | None) -> _Broken:
    if error is None:
        return _Broken(
            Reason.INVALID_JSON, f"invalid JSON at byte {begin}: too short to be an SES record"
        )
    if "depth" in error.msg:
        return _Broken(Reason.TOO_DEEP, f"JSON nested too deeply at byte {begin + error.pos}")
    return _Broken(Reason.INVALID_JSON, f"invalid JSON at byte {begin + error.pos}: {error.msg}")


# ---------------------------------------------------------------------------
# Envelopes


def _parse_document(
    document: dict[str, Any], index: int, result: ParseResult, latest_ms: int | None
) -> None:
    try:
        if "Records" in document:
            _parse_lambda(document, index, result, latest_ms)
        elif "Type" in document and ("Message" in document or "TopicArn" in document):
            _parse_ses(_unwrap_sns(document), index, result, latest_ms)
        elif "detail-type" in document and "source" in document:
            _parse_eventbridge(document, index, result, latest_ms)
        else:
            _parse_ses(document, index, result, latest_ms)
    except RecordError as exc:
        result.reject(index, exc.code, str(exc))
    except NoDeliveryState as exc:
        result.ignore(index, str(exc))


def _parse_lambda(
    document: dict[str, Any], index: int, result: ParseResult, latest_ms: int | None
) -> None:
    records = document["Records"]
    if not isinstance(records, list) or not records:
        raise RecordError(Reason.NOT_SES, "Records: expected a non-empty list of SNS event records")
    for position, record in enumerate(records):
        where = f"Records[{position}]"
        try:
            if not isinstance(record, dict):
                raise RecordError(Reason.NOT_OBJECT, f"{where}: expected an object")
            source = record.get("EventSource") or record.get("eventSource")
            if source != "aws:sns":
                raise RecordError(
                    Reason.NOT_SES, f"{where}.EventSource: expected 'aws:sns', got {_show(source)}"
                )
            sns = record.get("Sns")
            if not isinstance(sns, dict):
                raise RecordError(Reason.BAD_FIELD, f"{where}.Sns: expected an object")
            _parse_ses(_unwrap_sns(sns), index, result, latest_ms)
        except RecordError as exc:
            result.reject(index, exc.code, f"{where}: {exc}")
        except NoDeliveryState as exc:
            result.ignore(index, f"{where}: {exc}")
    # Each inner record counts as one record; the envelope itself was counted once.
    result.records += len(records) - 1


def _unwrap_sns(envelope: dict[str, Any]) -> dict[str, Any]:
    kind = envelope.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        raise NoDeliveryState(
            f"SNS {kind} carries no delivery state (subscribe via /v1/ingest/sns)"
        )
    if kind != "Notification":
        raise RecordError(Reason.UNKNOWN_TYPE, f"Type: unknown SNS message type {_show(kind)}")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise RecordError(Reason.BAD_FIELD, "Message: SNS Message must be a JSON string")
    if len(message) > MAX_RECORD_BYTES:
        raise RecordError(
            Reason.TOO_LARGE, f"Message: over the {MAX_RECORD_BYTES}-byte record limit"
        )
    try:
        inner = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise RecordError(
            Reason.INVALID_JSON, f"Message: SNS Message is not JSON ({exc})"
        ) from None
    if not isinstance(inner, dict):
        raise RecordError(
            Reason.NOT_OBJECT, f"Message: SNS Message is a JSON {_kind(inner)}, expected an object"
        )
    return inner


def _parse_eventbridge(
    document: dict[str, Any], index: int, result: ParseResult, latest_ms: int | None
) -> None:
    if document.get("source") != "aws.ses":
        raise RecordError(
            Reason.NOT_SES, f"source: expected 'aws.ses', got {_show(document.get('source'))}"
        )
    detail_type = document.get("detail-type")
    if not isinstance(detail_type, str):
        raise RecordError(Reason.BAD_FIELD, "detail-type: expected a string")
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise RecordError(Reason.BAD_FIELD, "detail: expected an object")
    if detail_type in _ACCOUNT_DETAIL_TYPES or detail_type.startswith(_ACCOUNT_DETAIL_PREFIX):
        at = _timestamp(document, "time", "")
        _not_ahead(at, latest_ms, "time")
        account = document.get("account")
        region = document.get("region")
        result.account_events.append(
            AccountEvent(
                detail_type=detail_type[:MAX_DETAIL_CHARS],
                at=at,
                account=account[:MAX_DETAIL_CHARS] if isinstance(account, str) else None,
                region=region[:MAX_DETAIL_CHARS] if isinstance(region, str) else None,
                detail=detail,
            )
        )
        return
    # The detail-type ("Email Bounced") is a label; detail.eventType is the fact.
    try:
        _parse_ses(detail, index, result, latest_ms)
    except RecordError as exc:
        raise RecordError(exc.code, f"detail.{exc}") from None


# ---------------------------------------------------------------------------
# SES records


def _parse_ses(
    record: dict[str, Any], index: int, result: ParseResult, latest_ms: int | None
) -> None:
    if "eventType" in record:
        label = record["eventType"]
        if label == "Subscription":
            raise NoDeliveryState("Subscription event carries no delivery state")
        kind = _EVENT_TYPES.get(label) if isinstance(label, str) else None
        if kind is None:
            raise RecordError(
                Reason.UNKNOWN_TYPE, f"eventType: unknown SES event type {_show(label)}"
            )
    elif "notificationType" in record:
        label = record["notificationType"]
        if isinstance(label, str) and label in _NO_STATE_NOTIFICATIONS:
            raise NoDeliveryState(_NO_STATE_NOTIFICATIONS[label])
        kind = _NOTIFICATION_TYPES.get(label) if isinstance(label, str) else None
        if kind is None:
            raise RecordError(
                Reason.UNKNOWN_TYPE,
                f"notificationType: unknown SES notification type {_show(label)}",
            )
    else:
        raise RecordError(
            Reason.NOT_SES,
            "not an SES record: expected eventType or notificationType, an SNS envelope, "
            "an EventBridge event from aws.ses, or Lambda SNS Records",
        )
    drops = _Drops()
    mail = _mail(record, drops)
    if not mail.sent_at_known:
        # Lenient where it is safe: an event with its own time still says what
        # happened to its recipients. Send, Reject and Rendering Failure have no
        # time but mail.timestamp, so without it they say nothing datable.
        if kind in _TIMED_BY_MAIL:
            raise RecordError(Reason.MISSING_FIELD, "mail.timestamp: missing")
        event = _BUILDERS[kind](record, mail, drops)
        mail = replace(mail, sent_at=event.at)
        event = replace(event, mail=mail)
    else:
        event = _BUILDERS[kind](record, mail, drops)
    if drops.emptied and not event.recipients and kind in _BY_DESTINATION:
        raise RecordError(Reason.BAD_ADDRESS, drops.emptied)
    _not_ahead(mail.sent_at, latest_ms, "mail.timestamp")
    _not_ahead(event.at, latest_ms, "timestamp")
    if drops.capped:
        event = replace(event, truncated=True)
    result.events.append(event)
    result.event_records.append(index)
    # Counted only now: a rejected record's recipients are not "dropped", it is.
    if drops.bad:
        result.drop(Reason.BAD_ADDRESS, drops.bad)
    if drops.capped:
        result.drop(Reason.TOO_MANY, drops.capped)


def _mail(record: dict[str, Any], drops: _Drops) -> MailInfo:
    mail = record.get("mail")
    if not isinstance(mail, dict):
        if mail is None:
            raise NoDeliveryState("no mail object, so no mail.messageId: no delivery state")
        raise RecordError(Reason.BAD_FIELD, "mail: expected an object")
    message_id = mail.get("messageId")
    if message_id is None or message_id == "":
        raise NoDeliveryState("no mail.messageId: carries no delivery state")
    if not isinstance(message_id, str):
        raise RecordError(Reason.BAD_FIELD, "mail.messageId: expected a string")
    if len(message_id) > MAX_MESSAGE_ID_CHARS or not message_id.isprintable():
        raise RecordError(Reason.BAD_FIELD, "mail.messageId: not a plausible SES message id")
    known = mail.get("timestamp") is not None
    sent_at = _timestamp(mail, "timestamp", "mail.") if known else 0
    destination = _addresses(mail.get("destination", []), "mail.destination", drops)
    drops.destination_bad = drops.bad
    source = mail.get("source")
    if source is not None:
        if not isinstance(source, str):
            raise RecordError(Reason.BAD_FIELD, "mail.source: expected a string")
        source = source[:MAX_SOURCE_CHARS]
    subject = None
    headers = mail.get("commonHeaders")
    if isinstance(headers, dict):
        raw_subject = headers.get("subject")
        if isinstance(raw_subject, str):
            subject = raw_subject[:MAX_SUBJECT_CHARS]
    tags = _tags(mail.get("tags"))
    configuration_set = tags.get("ses:configuration-set")
    if isinstance(configuration_set, list):
        configuration_set = configuration_set[0] if configuration_set else None
    return MailInfo(
        message_id=message_id,
        sent_at=sent_at,
        source=source,
        subject=subject,
        configuration_set=configuration_set,
        tags=tags,
        destination=destination,
        sent_at_known=known,
    )


def _tags(raw: Any) -> dict[str, str | list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecordError(Reason.BAD_FIELD, "mail.tags: expected an object of tag lists")
    if len(raw) > MAX_TAGS:
        raise RecordError(Reason.TOO_MANY, f"mail.tags: over {MAX_TAGS} tags")
    tags: dict[str, str | list[str]] = {}
    for key, values in raw.items():
        # AWS's own examples carry " ses:configuration-set" with a stray space.
        name = (key if key[:1] != " " and key[-1:] != " " else key.strip())[:MAX_TAG_CHARS]
        if type(values) is list:
            if len(values) == 1 and type(values[0]) is str:
                tags[name] = values[0][:MAX_TAG_CHARS]
                continue
            if all(type(v) is str for v in values):
                tags[name] = [v[:MAX_TAG_CHARS] for v in values[:MAX_TAG_VALUES]]
                continue
        elif type(values) is str:
            tags[name] = values[:MAX_TAG_CHARS]
            continue
        raise RecordError(Reason.BAD_FIELD, f"mail.tags.{_clip(name)}: expected a list of strings")
    return tags


def _event(
    kind: EventType,
    mail: MailInfo,
    at: int,
    recipients: tuple[str, ...],
    details: dict[str, Any],
    processing_ms: int | None = None,
) -> SesEvent:
    return SesEvent(kind, mail, at, recipients, details, processing_ms)


def _send(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    return _event(EventType.SEND, mail, mail.sent_at, mail.destination, {})


def _reject(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    body = _section(record, "reject")
    return _event(
        EventType.REJECT, mail, mail.sent_at, mail.destination, {"reason": _opt_str(body, "reason")}
    )


def _rendering_failure(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    body = _section(record, "failure")
    details = {
        "error_message": _opt_str(body, "errorMessage"),
        "template_name": _opt_str(body, "templateName"),
    }
    return _event(EventType.RENDERING_FAILURE, mail, mail.sent_at, mail.destination, details)


def _delivery(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    body = _section(record, "delivery")
    recipients = _addresses(body.get("recipients"), "delivery.recipients", drops, required=True)
    # reportingMTA is always SES's own outbound host here: not worth its bytes in
    # every stored delivery (a bounce's reportingMTA, the receiver's, is kept).
    details = {
        "smtp_response": _opt_str(body, "smtpResponse"),
        "remote_mta_ip": _opt_str(body, "remoteMtaIp"),
    }
    processing = body.get("processingTimeMillis")
    if processing is not None and (type(processing) is not int or not 0 <= processing < 2**53):
        raise RecordError(
            Reason.BAD_FIELD, "delivery.processingTimeMillis: expected a non-negative integer"
        )
    at = _timestamp(body, "timestamp", "delivery.")
    return _event(EventType.DELIVERY, mail, at, recipients, details, processing)


def _bounce(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    body = _section(record, "bounce")
    bounce_type = body.get("bounceType")
    if bounce_type not in ("Permanent", "Transient", "Undetermined"):
        raise RecordError(
            Reason.BAD_FIELD,
            "bounce.bounceType: expected Permanent, Transient or Undetermined, "
            f"got {_show(bounce_type)}",
        )
    recipients, diagnostics = _recipient_reports(
        body.get("bouncedRecipients"), "bounce.bouncedRecipients", ("status", "action"), drops
    )
    details = {
        "bounce_type": bounce_type,
        "bounce_subtype": _opt_str(body, "bounceSubType"),
        "feedback_id": _opt_str(body, "feedbackId"),
        "reporting_mta": _opt_str(body, "reportingMTA"),
        "remote_mta_ip": _opt_str(body, "remoteMtaIp"),
        "reports": diagnostics,
    }
    at = _timestamp(body, "timestamp", "bounce.")
    return _event(EventType.BOUNCE, mail, at, recipients, details)


def _complaint(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    body = _section(record, "complaint")
    recipients, _ = _recipient_reports(
        body.get("complainedRecipients"), "complaint.complainedRecipients", (), drops
    )
    details = {
        "feedback_type": _opt_str(body, "complaintFeedbackType"),
        "complaint_subtype": _opt_str(body, "complaintSubType"),
        "feedback_id": _opt_str(body, "feedbackId"),
        "user_agent": _opt_str(body, "userAgent"),
    }
    at = _timestamp(body, "timestamp", "complaint.")
    return _event(EventType.COMPLAINT, mail, at, recipients, details)


def _delivery_delay(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
    body = _section(record, "deliveryDelay")
    recipients, diagnostics = _recipient_reports(
        body.get("delayedRecipients"), "deliveryDelay.delayedRecipients", ("status",), drops
    )
    expiration = body.get("expirationTime")
    details = {
        "delay_type": _opt_str(body, "delayType"),
        # When SES gives up: ahead of the clock by nature, so no future check.
        "expiration_time": (
            _timestamp(body, "expirationTime", "deliveryDelay.") if expiration else None
        ),
        "reporting_mta": _opt_str(body, "reportingMTA"),
        "reports": diagnostics,
    }
    at = _timestamp(body, "timestamp", "deliveryDelay.")
    return _event(EventType.DELIVERY_DELAY, mail, at, recipients, details)


def _engagement(kind: EventType, section: str, fields: dict[str, str]):
    def build(record: dict[str, Any], mail: MailInfo, drops: _Drops) -> SesEvent:
        body = _section(record, section)
        details = {name: _opt_str(body, source) for name, source in fields.items()}
        at = _timestamp(body, "timestamp", f"{section}.")
        # SES cannot tell which recipient of a multi-recipient message opened it
        # (nor, when one of two was not an address, that the other one did).
        single = len(mail.destination) == 1 and not drops.destination_bad
        recipients = mail.destination if single else ()
        return _event(kind, mail, at, recipients, details)

    return build


_BUILDERS = {
    EventType.SEND: _send,
    EventType.REJECT: _reject,
    EventType.RENDERING_FAILURE: _rendering_failure,
    EventType.DELIVERY: _delivery,
    EventType.BOUNCE: _bounce,
    EventType.COMPLAINT: _complaint,
    EventType.DELIVERY_DELAY: _delivery_delay,
    EventType.OPEN: _engagement(
        EventType.OPEN, "open", {"ip_address": "ipAddress", "user_agent": "userAgent"}
    ),
    EventType.CLICK: _engagement(
        EventType.CLICK,
        "click",
        {"link": "link", "ip_address": "ipAddress", "user_agent": "userAgent"},
    ),
}


# ---------------------------------------------------------------------------
# Field readers: each names the path it read in its error


def _section(record: dict[str, Any], name: str) -> dict[str, Any]:
    body = record.get(name)
    if body is None:
        if name in ("reject", "failure"):
            return {}
        raise RecordError(
            Reason.MISSING_FIELD, f"{name}: missing; a {name} record needs its {name} object"
        )
    if not isinstance(body, dict):
        raise RecordError(Reason.BAD_FIELD, f"{name}: expected an object")
    return body


def _timestamp(body: dict[str, Any], key: str, path: str) -> int:
    value = body.get(key)
    if value is None:
        raise RecordError(Reason.MISSING_FIELD, f"{path}{key}: missing")
    try:
        return parse_ms(value)
    except TimestampError as exc:
        raise RecordError(Reason.BAD_TIMESTAMP, f"{path}{key}: {exc}") from None


def _not_ahead(ms: int, latest_ms: int | None, path: str) -> None:
    """Refuse a time further ahead of the clock than the caller allows."""
    if latest_ms is not None and ms > latest_ms:
        raise RecordError(
            Reason.FUTURE_TIMESTAMP,
            f"{path}: dated further ahead of the clock than SES_TRACKER_MAX_FUTURE_S allows",
        )


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value[: DETAIL_CHARS.get(key, MAX_DETAIL_CHARS)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)[:MAX_DETAIL_CHARS]
    raise RecordError(Reason.BAD_FIELD, f"{key}: expected a string")


class _Drops:
    """Recipients dropped while reading one record; counted only if it is kept."""

    __slots__ = ("bad", "capped", "destination_bad", "emptied")

    def __init__(self) -> None:
        self.bad = 0
        self.capped = 0
        self.destination_bad = 0
        # Why mail.destination has no address left, when it named some: a record
        # whose recipients are the destination is then rejected.
        self.emptied = ""


def _addresses(raw: Any, path: str, drops: _Drops, *, required: bool = False) -> tuple[str, ...]:
    """The addresses of a list of strings; a non-address is dropped (bad_address)."""
    if raw is None:
        if required:
            raise RecordError(Reason.MISSING_FIELD, f"{path}: missing")
        return ()
    if not isinstance(raw, list):
        raise RecordError(Reason.BAD_FIELD, f"{path}: expected a list of addresses")
    if required and not raw:
        raise RecordError(Reason.MISSING_FIELD, f"{path}: empty")
    addresses: dict[str, None] = {}
    bad, first_bad = 0, ""
    for position, item in enumerate(raw):
        address, why = read_address(item)
        if address is None:
            bad += 1
            # The reason, never the value: addresses are personal data, and this
            # text is answered and logged.
            first_bad = first_bad or f"{path}[{position}]: {why}"
        else:
            addresses[address] = None
    drops.bad += bad
    if bad and not addresses:
        emptied = f"{path}: no recipient is an address ({first_bad})"
        if required:
            raise RecordError(Reason.BAD_ADDRESS, emptied)
        # Whether that leaves the record without recipients is its type's call.
        drops.emptied = emptied
    return _capped(tuple(addresses), drops)


def _capped(addresses: tuple[str, ...], drops: _Drops) -> tuple[str, ...]:
    """At most MAX_RECIPIENTS addresses: the smallest, so any copy keeps the same."""
    if len(addresses) <= MAX_RECIPIENTS:
        return addresses
    drops.capped += len(addresses) - MAX_RECIPIENTS
    kept = set(sorted(addresses)[:MAX_RECIPIENTS])
    return tuple(address for address in addresses if address in kept)


def _recipient_reports(
    raw: Any, path: str, keys: tuple[str, ...], drops: _Drops
) -> tuple[tuple[str, ...], list[dict[str, str | None]]]:
    if not isinstance(raw, list) or not raw:
        raise RecordError(Reason.BAD_FIELD, f"{path}: expected a non-empty list of recipients")
    reports: dict[str, dict[str, str | None]] = {}
    first_bad = ""
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RecordError(Reason.BAD_FIELD, f"{path}[{i}]: expected an object")
        address, why = read_address(item.get("emailAddress"))
        if address is None:
            drops.bad += 1
            first_bad = first_bad or f"{path}[{i}].emailAddress: {why}"
            continue
        if address in reports:
            continue
        report: dict[str, str | None] = {"address": address}
        for key in keys:
            report[key] = _opt_str(item, key)
        if "diagnosticCode" in item:
            report["diagnostic_code"] = _opt_str(item, "diagnosticCode")
        reports[address] = report
    if not reports:
        raise RecordError(Reason.BAD_ADDRESS, f"{path}: no recipient is an address ({first_bad})")
    addresses = _capped(tuple(reports), drops)
    if not keys:
        return addresses, []
    return addresses, [reports[address] for address in addresses]


_NOT_AN_OBJECT = {
    kind: f"record is a JSON {kind}, expected an object"
    for kind in ("array", "string", "number", "boolean", "null")
}


def _kind(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _clip(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: Any) -> str:
    """A value quoted into an error, never long: errors are answered and logged."""
    return _clip(repr(value))
