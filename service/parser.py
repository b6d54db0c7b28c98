"""One parser for every shape SES events arrive in.

``parse_payload(body)`` takes the raw bytes of a Kafka record, an SQS message body,
an HTTP request or a saved file and returns a :class:`ParseResult`. It understands:

* SES event-publishing records (``eventType``) and SES notifications
  (``notificationType``);
* either of those inside an SNS envelope, a Lambda-style SNS event
  (``{"Records": [{"EventSource": "aws:sns", "Sns": {...}}]}``) or an EventBridge
  event (``"source": "aws.ses"``, ``detail``);
* EventBridge account-level events (``Sending Status Disabled`` ...);
* several records in one payload: a JSON array, newline-delimited JSON, or objects
  written back to back as Firehose does.

A bad record is reported with its index and a reason that names the offending field;
it never stops the records around it. ``mail.messageId`` is the message key, never
``commonHeaders.messageId`` (that one is the sender's own header and is not unique).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson

from service.events import (
    AccountEvent,
    EventType,
    MailInfo,
    ParseResult,
    RecordIssue,
    SesEvent,
)
from service.timestamps import TimestampError, parse_ms

DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
# SNS caps a message at 256 KiB and Firehose a record at 1,000 KiB; SES events with
# full headers stay well below both. Anything larger is not an SES event.
MAX_RECORD_BYTES = 1024 * 1024
MAX_MESSAGE_ID_CHARS = 256
MAX_ADDRESS_CHARS = 320
MAX_RECIPIENTS = 1000
MAX_SUBJECT_CHARS = 256
MAX_TAGS = 50

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
_ACCOUNT_DETAIL_TYPES = ("Sending Status Disabled", "Sending Status Enabled")
_ACCOUNT_DETAIL_PREFIX = "Advisor Recommendation Status"


class RecordError(ValueError):
    """The record is malformed; the message says which field and why."""


class NoDeliveryState(Exception):
    """The record is well formed but says nothing about a message's delivery."""


def parse_payload(body: bytes | str, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ParseResult:
    """Parse every record in ``body``; see the module docstring for the shapes."""
    result = ParseResult()
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > max_bytes:
        result.records = 1
        result.rejected.append(
            RecordIssue(0, f"payload is {len(raw)} bytes, over the {max_bytes}-byte limit")
        )
        return result
    for index, document in enumerate(_documents(raw)):
        result.records += 1
        if isinstance(document, _Broken):
            result.rejected.append(RecordIssue(index, document.reason))
            continue
        _parse_document(document, index, result)
    if result.records == 0:
        result.records = 1
        result.rejected.append(RecordIssue(0, "empty payload: no JSON record found"))
    return result


# ---------------------------------------------------------------------------
# Splitting a payload into JSON documents


class _Broken:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


def _documents(raw: bytes) -> Iterator[Any]:
    try:
        whole = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if isinstance(whole, list):
            yield from whole
        else:
            yield whole
        return
    # Fast path: newline-delimited JSON, one compact record a line.
    lines = [line for line in raw.split(b"\n") if line.strip()]
    try:
        documents = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError:
        yield from _concatenated(raw)
    else:
        yield from documents


def _concatenated(raw: bytes) -> Iterator[Any]:
    """Objects back to back, compact or pretty-printed, with or without newlines.

    Firehose writes ``{...}{...}``; saved files often hold pretty-printed objects
    one after another. A broken object is reported once and scanning resumes at the
    next place a record may begin (see ``_next_boundary``).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield _Broken(f"not UTF-8 text at byte {exc.start}")
        return
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= end:
            return
        try:
            document, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield _Broken(f"invalid JSON at char {exc.pos}: {exc.msg}")
            # The error can lie inside the next record (a truncated value swallows
            # what follows), so resume at the first boundary after this one's start.
            pos = _next_boundary(text, pos + 1)
            continue
        except RecursionError:
            # json's scanner recurses per nesting level; hostile input must not
            # take the consumer down with it.
            yield _Broken(f"JSON nested too deeply at char {pos}")
            pos = _next_boundary(text, pos + 1)
            continue
        yield document


# Where a record may begin: after "}{" or a newline, or at an object opening with a
# key only a top-level record has (a record cut off mid-value swallows the one after
# it when nothing separates them).
_SEPARATORS = ("}{", "\n{")
_OPENERS = ('{"eventType"', '{"notificationType"', '{"Type"', '{"version"', '{"Records"')


def _next_boundary(text: str, start: int) -> int:
    candidates = [i + 1 for i in (text.find(s, start) for s in _SEPARATORS) if i >= 0]
    candidates += [i for i in (text.find(o, start) for o in _OPENERS) if i >= 0]
    return min(candidates, default=len(text))


# ---------------------------------------------------------------------------
# Envelopes


def _parse_document(document: Any, index: int, result: ParseResult) -> None:
    try:
        if not isinstance(document, dict):
            raise RecordError(f"record is a JSON {_kind(document)}, expected an object")
        if "Records" in document:
            _parse_lambda(document, index, result)
        elif "Type" in document and ("Message" in document or "TopicArn" in document):
            _parse_ses(_unwrap_sns(document), index, result)
        elif "detail-type" in document and "source" in document:
            _parse_eventbridge(document, index, result)
        else:
            _parse_ses(document, index, result)
    except RecordError as exc:
        result.rejected.append(RecordIssue(index, str(exc)))
    except NoDeliveryState as exc:
        result.ignored.append(RecordIssue(index, str(exc)))


def _parse_lambda(document: dict[str, Any], index: int, result: ParseResult) -> None:
    records = document["Records"]
    if not isinstance(records, list) or not records:
        raise RecordError("Records: expected a non-empty list of SNS event records")
    for position, record in enumerate(records):
        where = f"Records[{position}]"
        try:
            if not isinstance(record, dict):
                raise RecordError(f"{where}: expected an object")
            source = record.get("EventSource") or record.get("eventSource")
            if source != "aws:sns":
                raise RecordError(f"{where}.EventSource: expected 'aws:sns', got {source!r}")
            sns = record.get("Sns")
            if not isinstance(sns, dict):
                raise RecordError(f"{where}.Sns: expected an object")
            _parse_ses(_unwrap_sns(sns), index, result)
        except RecordError as exc:
            result.rejected.append(RecordIssue(index, f"{where}: {exc}"))
        except NoDeliveryState as exc:
            result.ignored.append(RecordIssue(index, f"{where}: {exc}"))
    # Each inner record counts as one record; the envelope itself was counted once.
    result.records += len(records) - 1


def _unwrap_sns(envelope: dict[str, Any]) -> dict[str, Any]:
    kind = envelope.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        raise NoDeliveryState(
            f"SNS {kind} carries no delivery state (subscribe via /v1/ingest/sns)"
        )
    if kind != "Notification":
        raise RecordError(f"Type: unknown SNS message type {kind!r}")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise RecordError("Message: SNS Message must be a JSON string")
    if len(message) > MAX_RECORD_BYTES:
        raise RecordError(f"Message: over the {MAX_RECORD_BYTES}-byte record limit")
    try:
        inner = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"Message: SNS Message is not JSON ({exc})") from None
    if not isinstance(inner, dict):
        raise RecordError(f"Message: SNS Message is a JSON {_kind(inner)}, expected an object")
    return inner


def _parse_eventbridge(document: dict[str, Any], index: int, result: ParseResult) -> None:
    if document.get("source") != "aws.ses":
        raise RecordError(f"source: expected 'aws.ses', got {document.get('source')!r}")
    detail_type = document.get("detail-type")
    if not isinstance(detail_type, str):
        raise RecordError("detail-type: expected a string")
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise RecordError("detail: expected an object")
    if detail_type in _ACCOUNT_DETAIL_TYPES or detail_type.startswith(_ACCOUNT_DETAIL_PREFIX):
        at = _timestamp(document, "time", "")
        account = document.get("account")
        region = document.get("region")
        result.account_events.append(
            AccountEvent(
                detail_type=detail_type,
                at=at,
                account=account if isinstance(account, str) else None,
                region=region if isinstance(region, str) else None,
                detail=detail,
            )
        )
        return
    # The detail-type ("Email Bounced") is a label; detail.eventType is the fact.
    try:
        _parse_ses(detail, index, result)
    except RecordError as exc:
        raise RecordError(f"detail.{exc}") from None


# ---------------------------------------------------------------------------
# SES records


def _parse_ses(record: dict[str, Any], index: int, result: ParseResult) -> None:
    if "eventType" in record:
        label = record["eventType"]
        if label == "Subscription":
            raise NoDeliveryState("Subscription event carries no delivery state")
        kind = _EVENT_TYPES.get(label) if isinstance(label, str) else None
        if kind is None:
            raise RecordError(f"eventType: unknown SES event type {label!r}")
    elif "notificationType" in record:
        label = record["notificationType"]
        if isinstance(label, str) and label in _NO_STATE_NOTIFICATIONS:
            raise NoDeliveryState(_NO_STATE_NOTIFICATIONS[label])
        kind = _NOTIFICATION_TYPES.get(label) if isinstance(label, str) else None
        if kind is None:
            raise RecordError(f"notificationType: unknown SES notification type {label!r}")
    else:
        raise RecordError(
            "not an SES record: expected eventType or notificationType, an SNS envelope, "
            "an EventBridge event from aws.ses, or Lambda SNS Records"
        )
    mail = _mail(record)
    result.events.append(_BUILDERS[kind](record, mail))


def _mail(record: dict[str, Any]) -> MailInfo:
    mail = record.get("mail")
    if not isinstance(mail, dict):
        if mail is None:
            raise NoDeliveryState("no mail object, so no mail.messageId: no delivery state")
        raise RecordError("mail: expected an object")
    message_id = mail.get("messageId")
    if message_id is None or message_id == "":
        raise NoDeliveryState("no mail.messageId: carries no delivery state")
    if not isinstance(message_id, str):
        raise RecordError("mail.messageId: expected a string")
    if len(message_id) > MAX_MESSAGE_ID_CHARS or not message_id.isprintable():
        raise RecordError("mail.messageId: not a plausible SES message id")
    sent_at = _timestamp(mail, "timestamp", "mail.")
    destination = _addresses(mail.get("destination", []), "mail.destination")
    source = mail.get("source")
    if source is not None and not isinstance(source, str):
        raise RecordError("mail.source: expected a string")
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
    )


def _tags(raw: Any) -> dict[str, str | list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecordError("mail.tags: expected an object of tag lists")
    if len(raw) > MAX_TAGS:
        raise RecordError(f"mail.tags: over {MAX_TAGS} tags")
    tags: dict[str, str | list[str]] = {}
    for key, values in raw.items():
        # AWS's own examples carry " ses:configuration-set" with a stray space.
        name = key if key[:1] != " " and key[-1:] != " " else key.strip()
        if type(values) is list:
            if len(values) == 1 and type(values[0]) is str:
                tags[name] = values[0]
                continue
            if all(type(v) is str for v in values):
                tags[name] = values
                continue
        elif type(values) is str:
            tags[name] = values
            continue
        raise RecordError(f"mail.tags.{name}: expected a list of strings")
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


def _send(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    return _event(EventType.SEND, mail, mail.sent_at, mail.destination, {})


def _reject(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    body = _section(record, "reject")
    return _event(
        EventType.REJECT, mail, mail.sent_at, mail.destination, {"reason": _opt_str(body, "reason")}
    )


def _rendering_failure(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    body = _section(record, "failure")
    details = {
        "error_message": _opt_str(body, "errorMessage"),
        "template_name": _opt_str(body, "templateName"),
    }
    return _event(EventType.RENDERING_FAILURE, mail, mail.sent_at, mail.destination, details)


def _delivery(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    body = _section(record, "delivery")
    recipients = _addresses(body.get("recipients"), "delivery.recipients", required=True)
    # reportingMTA is always SES's own outbound host here: not worth its bytes in
    # every stored delivery (a bounce's reportingMTA, the receiver's, is kept).
    details = {
        "smtp_response": _opt_str(body, "smtpResponse"),
        "remote_mta_ip": _opt_str(body, "remoteMtaIp"),
    }
    processing = body.get("processingTimeMillis")
    if processing is not None and (not isinstance(processing, int) or processing < 0):
        raise RecordError("delivery.processingTimeMillis: expected a non-negative integer")
    at = _timestamp(body, "timestamp", "delivery.")
    return _event(EventType.DELIVERY, mail, at, recipients, details, processing)


def _bounce(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    body = _section(record, "bounce")
    bounce_type = body.get("bounceType")
    if bounce_type not in ("Permanent", "Transient", "Undetermined"):
        raise RecordError(
            f"bounce.bounceType: expected Permanent, Transient or Undetermined, got {bounce_type!r}"
        )
    recipients, diagnostics = _recipient_reports(
        body.get("bouncedRecipients"), "bounce.bouncedRecipients", ("status", "action")
    )
    details = {
        "bounce_type": bounce_type,
        "bounce_subtype": _opt_str(body, "bounceSubType"),
        "feedback_id": _opt_str(body, "feedbackId"),
        "reporting_mta": _opt_str(body, "reportingMTA"),
        "remote_mta_ip": _opt_str(body, "remoteMtaIp"),
        "reports": diagnostics,
    }
    return _event(
        EventType.BOUNCE, mail, _timestamp(body, "timestamp", "bounce."), recipients, details
    )


def _complaint(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    body = _section(record, "complaint")
    recipients, _ = _recipient_reports(
        body.get("complainedRecipients"), "complaint.complainedRecipients", ()
    )
    details = {
        "feedback_type": _opt_str(body, "complaintFeedbackType"),
        "complaint_subtype": _opt_str(body, "complaintSubType"),
        "feedback_id": _opt_str(body, "feedbackId"),
        "user_agent": _opt_str(body, "userAgent"),
    }
    at = _timestamp(body, "timestamp", "complaint.")
    return _event(EventType.COMPLAINT, mail, at, recipients, details)


def _delivery_delay(record: dict[str, Any], mail: MailInfo) -> SesEvent:
    body = _section(record, "deliveryDelay")
    recipients, diagnostics = _recipient_reports(
        body.get("delayedRecipients"), "deliveryDelay.delayedRecipients", ("status",)
    )
    expiration = body.get("expirationTime")
    details = {
        "delay_type": _opt_str(body, "delayType"),
        "expiration_time": (
            _timestamp(body, "expirationTime", "deliveryDelay.") if expiration else None
        ),
        "reporting_mta": _opt_str(body, "reportingMTA"),
        "reports": diagnostics,
    }
    at = _timestamp(body, "timestamp", "deliveryDelay.")
    return _event(EventType.DELIVERY_DELAY, mail, at, recipients, details)


def _engagement(kind: EventType, section: str, fields: dict[str, str]):
    def build(record: dict[str, Any], mail: MailInfo) -> SesEvent:
        body = _section(record, section)
        details = {name: _opt_str(body, source) for name, source in fields.items()}
        at = _timestamp(body, "timestamp", f"{section}.")
        # SES cannot tell which recipient of a multi-recipient message opened it.
        recipients = mail.destination if len(mail.destination) == 1 else ()
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
        raise RecordError(f"{name}: missing; a {name} record needs its {name} object")
    if not isinstance(body, dict):
        raise RecordError(f"{name}: expected an object")
    return body


def _timestamp(body: dict[str, Any], key: str, path: str) -> int:
    value = body.get(key)
    if value is None:
        raise RecordError(f"{path}{key}: missing")
    try:
        return parse_ms(value)
    except TimestampError as exc:
        raise RecordError(f"{path}{key}: {exc}") from None


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise RecordError(f"{key}: expected a string")


def normalize_address(text: str) -> str:
    """A recipient as state keeps it: bare address, case folded.

    Addresses are matched case-insensitively, as mailbox providers and SES's
    suppression list do; otherwise "Jane@x" and "jane@x" would be two recipients.
    """
    address = text.strip()
    # Bounce reports may name a recipient as `"Name" <addr>`.
    if address.endswith(">") and "<" in address:
        address = address[address.rindex("<") + 1 : -1]
    return address.lower()


def _address(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"{path}: expected an email address string")
    address = normalize_address(value)
    if len(address) > MAX_ADDRESS_CHARS:
        raise RecordError(f"{path}: address over {MAX_ADDRESS_CHARS} characters")
    return address


def _addresses(raw: Any, path: str, *, required: bool = False) -> tuple[str, ...]:
    if raw is None:
        if required:
            raise RecordError(f"{path}: missing")
        return ()
    if not isinstance(raw, list):
        raise RecordError(f"{path}: expected a list of addresses")
    if len(raw) > MAX_RECIPIENTS:
        raise RecordError(f"{path}: over {MAX_RECIPIENTS} recipients")
    if required and not raw:
        raise RecordError(f"{path}: empty")
    addresses: dict[str, None] = {}
    for item in raw:
        # Fast path for the usual bare, lower-case address; _address handles the rest.
        if type(item) is str and item.islower() and "<" not in item and item.strip() == item:
            if len(item) > MAX_ADDRESS_CHARS:
                raise RecordError(f"{path}: address over {MAX_ADDRESS_CHARS} characters")
            addresses[item] = None
        else:
            addresses[_address(item, f"{path}[{raw.index(item)}]")] = None
    return tuple(addresses)


def _recipient_reports(
    raw: Any, path: str, keys: tuple[str, ...]
) -> tuple[tuple[str, ...], list[dict[str, str | None]]]:
    if not isinstance(raw, list) or not raw:
        raise RecordError(f"{path}: expected a non-empty list of recipients")
    if len(raw) > MAX_RECIPIENTS:
        raise RecordError(f"{path}: over {MAX_RECIPIENTS} recipients")
    addresses: list[str] = []
    reports: list[dict[str, str | None]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RecordError(f"{path}[{i}]: expected an object")
        address = _address(item.get("emailAddress"), f"{path}[{i}].emailAddress")
        addresses.append(address)
        report: dict[str, str | None] = {"address": address}
        for key in keys:
            report[key] = _opt_str(item, key)
        if "diagnosticCode" in item:
            report["diagnostic_code"] = _opt_str(item, "diagnosticCode")
        reports.append(report)
    return tuple(dict.fromkeys(addresses)), reports if keys else []


def _kind(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
