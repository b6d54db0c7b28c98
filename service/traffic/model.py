"""A model of realistic SES traffic, for ``ses-tracker demo``, ``loadgen`` and tests.

It writes the records SES itself would publish (event publishing records, some
wrapped in SNS or EventBridge envelopes) and feeds them through the same parser and
pipeline as every real source. Time is compressed: what takes SES minutes or hours
(delays, retries, complaints) takes seconds here, so the status page moves.

Mix per recipient, roughly: most delivered after a log-normal latency; some
delayed once or more, then delivered or soft-bounced; permanent bounces, including
suppression-list drops; out-of-office auto-replies after delivery; complaints;
opens and clicks. Per message: the occasional Reject and Rendering Failure.
Events are sometimes duplicated and sometimes arrive out of order.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

from service.timestamps import format_ms

DOMAINS = (
    ("gmail.com", 40),
    ("outlook.com", 15),
    ("yahoo.com", 12),
    ("hotmail.com", 8),
    ("icloud.com", 8),
    ("example-corp.com", 7),
    ("greylist.example", 5),
    ("slowmx.example", 5),
)
SUBJECTS = (
    "Your order has shipped",
    "Reset your password",
    "Your one-time code",
    "Welcome aboard",
    "Invoice available",
    "Weekly digest",
)
# SendingDeferral: SES holding mail back itself, the tenth documented type.
DELAY_TYPES = (
    "TransientCommunicationFailure",
    "MailboxFull",
    "SpamDetected",
    "IPFailure",
    "SendingDeferral",
)
# Configuration sets, their weights and the sending identity each sends from; the
# marketing set tags each message with a campaign (SES_TRACKER_TAG_DIMENSIONS=campaign).
CONFIGURATION_SETS = (
    ("transactional", 60, "shop.example"),
    ("marketing", 30, "news.shop.example"),
    ("notifications", 10, "shop.example"),
)
CAMPAIGNS = ("spring-sale", "newsletter", "win-back")


class TrafficModel:
    """Decides what happens to each simulated message; deterministic for a seeded RNG."""

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        time_scale: float = 1.0,
        trouble: float = 0.0,
        domains: tuple[tuple[str, int], ...] = DOMAINS,
    ) -> None:
        self.rng = rng or random.Random()
        # (recipient domain, weight) pairs recipients are drawn from.
        self.domains = domains
        # Multiplies every simulated wait; 1.0 is the demo's compressed time.
        self.time_scale = time_scale
        # 0..1: how much more often than usual recipients bounce (a bad list, a
        # blocked IP); the demo's seeded history has a few such days.
        self.trouble = trouble

    def message(self, sent_at: int) -> list[tuple[int, dict[str, Any]]]:
        """Every event for one new message, each with the time it becomes visible."""
        rng = self.rng
        count = rng.choices((1, 2, 3, 5), weights=(80, 12, 6, 2))[0]
        recipients = [self._address() for _ in range(count)]
        mail = self._mail(sent_at, recipients)
        out: list[tuple[int, dict[str, Any]]] = []

        def emit(at: int, event_type: str, body_key: str | None, body: dict[str, Any]) -> None:
            record: dict[str, Any] = {"eventType": event_type, "mail": mail}
            if body_key is not None:
                record[body_key] = body
            # Visibility lags the event a little, by a random amount: that is what
            # puts arrivals out of order.
            visible = at + int(rng.expovariate(1 / 300) * self.time_scale)
            out.append((visible, record))
            if rng.random() < 0.03:
                out.append((visible + rng.randint(0, 2_000), record))

        roll = rng.random()
        if roll < 0.004:
            emit(
                sent_at,
                "Rendering Failure",
                "failure",
                {
                    "errorMessage": "Attribute 'firstName' is not present in the rendering data.",
                    "templateName": "WelcomeTemplate",
                },
            )
            return out
        emit(sent_at, "Send", "send", {})
        if roll < 0.008:
            emit(sent_at + 50, "Reject", "reject", {"reason": "Bad content"})
            return out
        for address in recipients:
            self._recipient_story(address, sent_at, emit)
        return out

    def _recipient_story(self, address: str, sent_at: int, emit: Any) -> None:
        rng = self.rng
        scale = self.time_scale
        domain = address.split("@", 1)[1]
        roll = rng.random() * (1.0 - self.trouble)
        if roll < 0.01:
            emit(
                sent_at + int(200 * scale),
                "Bounce",
                "bounce",
                self._bounce(
                    address,
                    sent_at + 200,
                    "Permanent",
                    "OnAccountSuppressionList",
                    "Amazon SES did not send the message to this address because it is on the "
                    "suppression list for your account.",
                ),
            )
            return
        if roll < 0.03:
            at = sent_at + int(rng.lognormvariate(7.5, 0.6) * scale)
            emit(
                at,
                "Bounce",
                "bounce",
                self._bounce(
                    address,
                    at,
                    "Permanent",
                    "General",
                    f"smtp; 550 5.1.1 <{address}>: Recipient address rejected: User unknown",
                ),
            )
            return
        at = sent_at
        delayed = domain in ("greylist.example", "slowmx.example") and rng.random() < 0.5
        if delayed or roll < 0.05:
            for _ in range(rng.randint(1, 3)):
                at += int(rng.uniform(2_000, 8_000) * scale)
                emit(at, "DeliveryDelay", "deliveryDelay", self._delay(address, at))
            if rng.random() < 0.25:
                at += int(rng.uniform(2_000, 6_000) * scale)
                emit(
                    at,
                    "Bounce",
                    "bounce",
                    self._bounce(
                        address,
                        at,
                        "Transient",
                        "General",
                        "smtp; 451 4.4.1 Timeout while waiting for the recipient server",
                    ),
                )
                return
        at += int(rng.lognormvariate(7.0, 0.8) * scale)  # median ~1.1 s
        processing = at - sent_at
        emit(
            at,
            "Delivery",
            "delivery",
            {
                "timestamp": format_ms(at),
                "processingTimeMillis": processing,
                "recipients": [address],
                "smtpResponse": "250 2.0.0 OK  1700000000 a1-20020a170906 - gsmtp",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
                "remoteMtaIp": "192.0.2.10",
            },
        )
        if rng.random() < 0.02:
            # Out-of-office: SES rounds the bounce time down to the second.
            bounce_at = (at + int(1_500 * scale)) // 1000 * 1000
            emit(
                bounce_at,
                "Bounce",
                "bounce",
                self._bounce(
                    address,
                    bounce_at,
                    "Transient",
                    "General",
                    "smtp; 250 auto-reply: out of office",
                ),
            )
        if rng.random() < 0.002:
            complaint_at = at + int(rng.uniform(5_000, 20_000) * scale)
            emit(
                complaint_at,
                "Complaint",
                "complaint",
                {
                    "timestamp": format_ms(complaint_at),
                    "feedbackId": self._feedback_id(),
                    "complainedRecipients": [{"emailAddress": address}],
                    "complaintFeedbackType": "abuse",
                    "userAgent": "Yahoo!-Mail-Feedback/2.0",
                },
            )
        if rng.random() < 0.25:
            open_at = at + int(rng.uniform(1_000, 15_000) * scale)
            emit(
                open_at,
                "Open",
                "open",
                {
                    "timestamp": format_ms(open_at),
                    "ipAddress": "198.51.100.7",
                    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
                },
            )
            if rng.random() < 0.3:
                click_at = open_at + int(rng.uniform(500, 5_000) * scale)
                emit(
                    click_at,
                    "Click",
                    "click",
                    {
                        "timestamp": format_ms(click_at),
                        "ipAddress": "198.51.100.7",
                        "link": "https://example.com/orders/track",
                        "linkTags": {"campaign": ["shipping"]},
                        "userAgent": "Mozilla/5.0",
                    },
                )

    def _address(self) -> str:
        names, weights = zip(*self.domains, strict=True)
        domain = self.rng.choices(names, weights=weights)[0]
        return f"user{self.rng.randrange(1_000_000)}@{domain}"

    def _mail(self, sent_at: int, recipients: list[str]) -> dict[str, Any]:
        rng = self.rng
        message_id = f"0100018{sent_at:x}-{uuid.UUID(int=rng.getrandbits(128))}-000000"
        subject = rng.choice(SUBJECTS)
        names, weights, identities = zip(*CONFIGURATION_SETS, strict=True)
        chosen = rng.choices(range(len(names)), weights=weights)[0]
        identity = identities[chosen]
        source = f"notifications@{identity}"
        tags: dict[str, list[str]] = {
            "ses:configuration-set": [names[chosen]],
            "ses:from-domain": [identity],
            "ses:caller-identity": ["shop-mailer"],
        }
        if names[chosen] == "marketing":
            tags["campaign"] = [rng.choice(CAMPAIGNS)]
        return {
            "timestamp": format_ms(sent_at),
            "source": source,
            "sourceArn": f"arn:aws:ses:us-east-1:123456789012:identity/{identity}",
            "sendingAccountId": "123456789012",
            "messageId": message_id,
            "destination": recipients,
            "headersTruncated": False,
            "commonHeaders": {
                "from": [f"Shop <{source}>"],
                "to": recipients,
                "messageId": message_id,
                "subject": subject,
            },
            "tags": tags,
        }

    def _bounce(
        self, address: str, at: int, kind: str, subtype: str, diagnostic: str
    ) -> dict[str, Any]:
        return {
            "bounceType": kind,
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1" if kind == "Permanent" else "4.4.7",
                    "diagnosticCode": diagnostic,
                }
            ],
            "timestamp": format_ms(at),
            "feedbackId": self._feedback_id(),
            "reportingMTA": "dns; a8-70.smtp-out.amazonses.com",
        }

    def _delay(self, address: str, at: int) -> dict[str, Any]:
        return {
            "timestamp": format_ms(at),
            "delayType": self.rng.choice(DELAY_TYPES),
            "expirationTime": format_ms(at + 36_000_000),
            "delayedRecipients": [
                {
                    "emailAddress": address,
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                }
            ],
        }

    def _feedback_id(self) -> str:
        return f"0100018b-{uuid.UUID(int=self.rng.getrandbits(128))}-000000"


def wrap(record: dict[str, Any], rng: random.Random) -> bytes:
    """Serialize as SES's destinations would: raw, in SNS, or in EventBridge."""
    roll = rng.random()
    if roll < 0.6:
        return orjson.dumps(record)
    if roll < 0.8:
        return orjson.dumps(
            {
                "Type": "Notification",
                "MessageId": str(uuid.UUID(int=rng.getrandbits(128))),
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
                "Message": orjson.dumps(record).decode(),
                "Timestamp": record["mail"]["timestamp"],
                "SignatureVersion": "2",
            }
        )
    return orjson.dumps(
        {
            "version": "0",
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "detail-type": "Email " + record["eventType"],
            "source": "aws.ses",
            "account": "123456789012",
            "time": record["mail"]["timestamp"],
            "region": "us-east-1",
            "resources": [],
            "detail": record,
        }
    )
