"""Builders for SES records in the shapes SES publishes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service.clock import wall_clock_ms
from service.timestamps import format_ms

SENT_AT = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def clock_from(start_ms: int) -> Callable[[], int]:
    """A wall clock that reads ``start_ms`` now and runs at real speed from there:
    a service judging SENT_AT-dated records live (statistics count by event time,
    and only the last hour of it) runs on one of these."""
    offset = start_ms - wall_clock_ms()
    return lambda: wall_clock_ms() + offset


def mail(message_id: str, recipients: list[str], sent_at: int = SENT_AT) -> dict[str, Any]:
    return {
        "timestamp": format_ms(sent_at),
        "source": "sender@shop.example",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": recipients,
        "headersTruncated": False,
        "commonHeaders": {
            "from": ["sender@shop.example"],
            "to": recipients,
            "messageId": "<custom-header-id@shop.example>",
            "subject": "Your order",
        },
        "tags": {"ses:configuration-set": ["transactional"], "team": ["orders"]},
    }


def send(message_id: str, recipients: list[str], sent_at: int = SENT_AT) -> dict[str, Any]:
    return {"eventType": "Send", "mail": mail(message_id, recipients, sent_at), "send": {}}


def delivery(
    message_id: str, recipients: list[str], at: int, sent_at: int = SENT_AT, **extra: Any
) -> dict[str, Any]:
    return {
        "eventType": "Delivery",
        "mail": mail(message_id, recipients, sent_at),
        "delivery": {
            "timestamp": format_ms(at),
            "processingTimeMillis": max(0, at - sent_at),
            "recipients": recipients,
            "smtpResponse": "250 2.0.0 OK",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            **extra,
        },
    }


def bounce(
    message_id: str,
    recipients: list[str],
    at: int,
    bounce_type: str = "Permanent",
    sent_at: int = SENT_AT,
    subtype: str = "General",
) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "mail": mail(message_id, recipients, sent_at),
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {
                    "emailAddress": r,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for r in recipients
            ],
            "timestamp": format_ms(at),
            "feedbackId": f"fb-{message_id}-{at}-{bounce_type}",
        },
    }


def complaint(message_id: str, recipients: list[str], at: int, sent_at: int = SENT_AT) -> dict:
    return {
        "eventType": "Complaint",
        "mail": mail(message_id, recipients, sent_at),
        "complaint": {
            "complainedRecipients": [{"emailAddress": r} for r in recipients],
            "timestamp": format_ms(at),
            "feedbackId": f"cfb-{message_id}-{at}",
            "complaintFeedbackType": "abuse",
        },
    }


def delay(message_id: str, recipients: list[str], at: int, sent_at: int = SENT_AT) -> dict:
    return {
        "eventType": "DeliveryDelay",
        "mail": mail(message_id, recipients, sent_at),
        "deliveryDelay": {
            "timestamp": format_ms(at),
            "delayType": "TransientCommunicationFailure",
            "expirationTime": format_ms(at + 3_600_000),
            "delayedRecipients": [
                {"emailAddress": r, "status": "4.4.1", "diagnosticCode": "smtp; 421 4.4.1"}
                for r in recipients
            ],
        },
    }


def reject(message_id: str, recipients: list[str], sent_at: int = SENT_AT) -> dict:
    return {
        "eventType": "Reject",
        "mail": mail(message_id, recipients, sent_at),
        "reject": {"reason": "Bad content"},
    }


def rendering_failure(message_id: str, recipients: list[str], sent_at: int = SENT_AT) -> dict:
    return {
        "eventType": "Rendering Failure",
        "mail": mail(message_id, recipients, sent_at),
        "failure": {"errorMessage": "Attribute 'name' is missing", "templateName": "Welcome"},
    }


def open_(message_id: str, recipients: list[str], at: int, sent_at: int = SENT_AT) -> dict:
    return {
        "eventType": "Open",
        "mail": mail(message_id, recipients, sent_at),
        "open": {"timestamp": format_ms(at), "ipAddress": "198.51.100.1", "userAgent": "UA"},
    }


def click(message_id: str, recipients: list[str], at: int, sent_at: int = SENT_AT) -> dict:
    return {
        "eventType": "Click",
        "mail": mail(message_id, recipients, sent_at),
        "click": {
            "timestamp": format_ms(at),
            "ipAddress": "198.51.100.1",
            "link": "https://shop.example/track",
            "linkTags": {"campaign": ["x"]},
            "userAgent": "UA",
        },
    }


def sns(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "0c2d7e8f-0000-4000-8000-000000000000",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses",
        "Message": orjson.dumps(record).decode(),
        "Timestamp": "2023-11-14T22:13:21.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
    }


def eventbridge(record: dict[str, Any], detail_type: str = "Email Delivered") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "11111111-2222-3333-4444-555555555555",
        "detail-type": detail_type,
        "source": "aws.ses",
        "account": "123456789012",
        "time": "2023-11-14T22:13:21Z",
        "region": "us-east-1",
        "resources": [],
        "detail": record,
    }


def dumps(*records: dict[str, Any], sep: bytes = b"\n") -> bytes:
    return sep.join(orjson.dumps(r) for r in records)


def eventbridge_account(detail_type: str, at: int, account: str = "123456789012") -> dict[str, Any]:
    """An account-level EventBridge event (``Sending Status Disabled`` ...)."""
    return {
        "version": "0",
        "id": "22222222-2222-3333-4444-555555555555",
        "detail-type": detail_type,
        "source": "aws.ses",
        "account": account,
        "time": format_ms(at),
        "region": "us-east-1",
        "resources": [],
        "detail": {},
    }
