"""What happened to one recipient, in words: a code, a sentence and what to do.

Pure: a recipient's merged state in (:class:`RecipientState`, built by
``service.view`` from a record, by ``service.forward.items`` from one change and
its event), a :class:`Diagnosis` out. The code comes only from the closed table
below (README, HTTP API): SES's own type strings (bounce type and subtype,
complaint feedback type, delay type) select a code through a lookup and never
become one, so a receiver can switch on the code without meeting an unknown.
What SES said (diagnostic codes, SMTP answers, reject reasons, template errors)
appears in the summary only as quoted data, cut to a bound and stripped of
control characters; the page shows it as text.

The meanings come from the AWS documents the product was specified from
(``shared/seeds/``, cited by file name beside each one) and from SES's published
bounce, complaint and delay type definitions (event publishing, the ``bounce``,
``complaint`` and ``deliveryDelay`` objects), in this project's own words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.codec import StoredEvent
from service.events import EventType
from service.timestamps import format_ms

# The closed code table (README, HTTP API: "diagnosis"); nothing else is ever a code.
DELIVERED = "delivered"
AUTO_REPLY = "auto_reply"
PENDING = "pending"
PENDING_OVERDUE = "pending.overdue"
BOUNCE_UNDETERMINED = "bounce.undetermined"
COMPLAINT = "complaint"
COMPLAINT_ON_ACCOUNT_SUPPRESSION_LIST = "complaint.on_account_suppression_list"
REJECT = "reject"
RENDERING_FAILURE = "rendering_failure"

# SES DeliveryDelay delayType -> code. The keys are SES's ten documented types
# (service.stats.DELAY_TYPES holds the same set); anything else is undetermined.
DELAY_CODES: dict[str, str] = {
    "InternalFailure": "delay.internal_failure",
    "General": "delay.general",
    "MailboxFull": "delay.mailbox_full",
    "SpamDetected": "delay.spam_detected",
    "RecipientServerError": "delay.recipient_server_error",
    "IPFailure": "delay.ip_failure",
    "TransientCommunicationFailure": "delay.transient_communication_failure",
    "BYOIPHostNameLookupUnavailable": "delay.byoip_host_name_lookup_unavailable",
    "SendingDeferral": "delay.sending_deferral",
    "Undetermined": "delay.undetermined",
}
DELAY_UNDETERMINED = DELAY_CODES["Undetermined"]
# bounceSubType of a Permanent bounce -> code; other subtypes are .general.
PERMANENT_CODES: dict[str, str] = {
    "General": "bounce.permanent.general",
    "NoEmail": "bounce.permanent.no_email",
    "Suppressed": "bounce.permanent.suppressed",
    "OnAccountSuppressionList": "bounce.permanent.on_account_suppression_list",
}
# bounceSubType of a Transient bounce -> code; other subtypes are .general.
TRANSIENT_CODES: dict[str, str] = {
    "General": "bounce.transient.general",
    "MailboxFull": "bounce.transient.mailbox_full",
    "MessageTooLarge": "bounce.transient.message_too_large",
    "ContentRejected": "bounce.transient.content_rejected",
    "AttachmentRejected": "bounce.transient.attachment_rejected",
}
# complaintFeedbackType (the ARF feedback types SES passes on) -> code.
COMPLAINT_CODES: dict[str, str] = {
    "abuse": "complaint.abuse",
    "auth-failure": "complaint.auth_failure",
    "fraud": "complaint.fraud",
    "not-spam": "complaint.not_spam",
    "other": "complaint.other",
    "virus": "complaint.virus",
}

CODES: frozenset[str] = frozenset(
    {
        DELIVERED,
        AUTO_REPLY,
        PENDING,
        PENDING_OVERDUE,
        BOUNCE_UNDETERMINED,
        COMPLAINT,
        COMPLAINT_ON_ACCOUNT_SUPPRESSION_LIST,
        REJECT,
        RENDERING_FAILURE,
        *DELAY_CODES.values(),
        *PERMANENT_CODES.values(),
        *TRANSIENT_CODES.values(),
        *COMPLAINT_CODES.values(),
    }
)

# How much of SES's own text (a diagnostic code, an SMTP answer, a template error)
# a summary quotes: enough to read the reason, never a page of it.
QUOTE_CHARS = 160
SUMMARY_CHARS = 600

_MESSAGE_TYPES = frozenset({EventType.REJECT, EventType.RENDERING_FAILURE})
_SOFT = frozenset({"Transient", "Undetermined"})


@dataclass(frozen=True, slots=True)
class Diagnosis:
    code: str  # one of CODES
    summary: str  # one sentence, with the recipient's figures
    action: str  # what the sender should do

    def view(self) -> dict[str, str]:
        """As ``GET /v1/messages/{id}`` shows it."""
        return {"code": self.code, "summary": self.summary, "action": self.action}

    def brief(self) -> dict[str, str]:
        """As forwarded items and alert examples carry it."""
        return {"code": self.code, "summary": self.summary}


@dataclass(frozen=True, slots=True)
class RecipientState:
    """What the diagnosis reads about one recipient.

    ``events``: the message's stored events in time order; those naming the
    recipient count, and the message's own (Reject, Rendering Failure) always.
    ``complete`` is False when only the event of one change is known (a
    forwarded item): the sentence then claims no counts it cannot know.
    """

    address: str
    status: str  # service.state.STATUSES
    events: Sequence[StoredEvent]
    sent_at: int | None = None
    now_ms: int | None = None
    overdue: bool = False
    overdue_after_ms: int | None = None
    complete: bool = True


def diagnose(recipient: RecipientState) -> Diagnosis:
    """The recipient's diagnosis; its code is always one of :data:`CODES`."""
    found = _diagnose(recipient)
    if len(found.summary) > SUMMARY_CHARS:
        found = Diagnosis(found.code, found.summary[: SUMMARY_CHARS - 1] + "…", found.action)
    return found


def _diagnose(recipient: RecipientState) -> Diagnosis:
    mine = [
        e for e in recipient.events if e.type in _MESSAGE_TYPES or recipient.address in e.recipients
    ]
    status = recipient.status
    if status == "rendering_failed":
        return _rendering_failure(recipient, _first(mine, EventType.RENDERING_FAILURE))
    if status == "rejected":
        return _reject(recipient, _first(mine, EventType.REJECT))
    if status == "complained":
        return _complaint(recipient, mine)
    if status == "bounced":
        return _bounce(recipient, mine)
    if status == "delivered":
        return _delivered(recipient, mine)
    delays = [e for e in mine if e.type is EventType.DELIVERY_DELAY]
    if status == "delayed" or delays:
        return _delayed(recipient, delays)
    return _pending(recipient)


# --- outcomes ---------------------------------------------------------------------


def _rendering_failure(r: RecipientState, event: StoredEvent | None) -> Diagnosis:
    # 001 and 002: SES could not build the message from the template and the data
    # sent with SendTemplatedEmail (a variable missing or not allowed), and dropped it.
    details = event.details if event else {}
    template = details.get("template_name")
    error = details.get("error_message")
    summary = (
        "SES could not build this message"
        + (f" from template {_quote(template, 80)}" if template else " from its template")
        + (f" ({_quote(error)})" if error else "")
        + " and dropped it without trying to deliver it."
    )
    return Diagnosis(
        RENDERING_FAILURE,
        summary,
        "Fix the template or the template data (every variable the template uses must "
        "be in the data, with an allowed value), then send the message again.",
    )


def _reject(r: RecipientState, event: StoredEvent | None) -> Diagnosis:
    # 002 (Reject event) and 003 (note on viruses): SES accepted the request, found
    # a virus in the message and never tried the recipient's server.
    reason = (event.details if event else {}).get("reason")
    summary = (
        "SES accepted the request but rejected the message"
        + (f" ({_quote(reason)})" if reason else "")
        + " and never tried to deliver it: it judged the content unsafe, usually a virus."
    )
    return Diagnosis(
        REJECT,
        summary,
        "Remove the virus or suspect attachment from the message, test it against the "
        "SES mailbox simulator, then send it again.",
    )


def _complaint(r: RecipientState, mine: list[StoredEvent]) -> Diagnosis:
    event = _first(mine, EventType.COMPLAINT)
    details = event.details if event else {}
    if details.get("complaint_subtype") == "OnAccountSuppressionList":
        # 002 (suppression list): an earlier complaint put the address on the
        # account's suppression list, and SES dropped this message without sending.
        return Diagnosis(
            COMPLAINT_ON_ACCOUNT_SUPPRESSION_LIST,
            "SES did not send this message: the address is on your account's suppression "
            "list after an earlier complaint.",
            "Stop mailing this address; remove it from the account-level suppression list "
            "only if you are sure it will not complain again.",
        )
    code = COMPLAINT_CODES.get(details.get("feedback_type") or "", COMPLAINT)
    what, action = _COMPLAINT_MEANINGS[code]
    when = _after_send(r, event.at if event else None)
    # 003 (complaint): the mail was delivered, and the recipient's provider passed
    # on, through its feedback loop, that the recipient objected to it.
    summary = f"The recipient's provider reported a complaint{what}{when}."
    return Diagnosis(code, summary, action)


# 003 (complaint) for what a complaint is; the feedback types are the ARF ones SES
# passes on in complaintFeedbackType.
_STOP = "Stop mailing this address (the tracker lists it under suppressions)"
_COMPLAINT_MEANINGS: dict[str, tuple[str, str]] = {
    "complaint.abuse": (
        " (abuse: the recipient marked it as spam)",
        f"{_STOP}, and check that every recipient asked for this kind of mail.",
    ),
    "complaint.auth_failure": (
        " (auth-failure: the message failed the provider's authentication checks)",
        f"{_STOP}; check the SPF, DKIM and DMARC set-up of the sending domain.",
    ),
    "complaint.fraud": (
        " (fraud: the recipient took it for phishing or fraud)",
        f"{_STOP}, and make the sender and links of this mail plainly yours.",
    ),
    "complaint.not_spam": (
        " (not-spam: the provider says the recipient does not consider it spam)",
        "Nothing urgent: it still counts as a complaint, so check the suppression list "
        "before mailing this address again.",
    ),
    "complaint.other": (
        " (feedback type other)",
        f"{_STOP}, and review why this recipient received this mail.",
    ),
    "complaint.virus": (
        " (virus: the provider found a virus in it)",
        f"{_STOP}, and scan the message and its attachments before sending again.",
    ),
    COMPLAINT: (
        " (no feedback type given)",
        f"{_STOP}, and check that the recipient asked for this mail.",
    ),
}


def _bounce(r: RecipientState, mine: list[StoredEvent]) -> Diagnosis:
    bounces = [e for e in mine if e.type is EventType.BOUNCE]
    # The bounce that decides the status (service.view): a Permanent one, else the first.
    permanent = [b for b in bounces if b.details.get("bounce_type") == "Permanent"]
    event = (permanent or bounces or [None])[0]
    if event is None:
        return Diagnosis(
            BOUNCE_UNDETERMINED,
            "SES reported a bounce whose details this tracker did not keep.",
            _UNDETERMINED_BOUNCE_ACTION,
        )
    details = event.details
    kind = details.get("bounce_type")
    subtype = details.get("bounce_subtype") or ""
    if kind == "Permanent":
        code = PERMANENT_CODES.get(subtype, PERMANENT_CODES["General"])
    elif kind == "Transient":
        code = TRANSIENT_CODES.get(subtype, TRANSIENT_CODES["General"])
    else:
        code = BOUNCE_UNDETERMINED
    what, action = _BOUNCE_MEANINGS[code]
    report = _report(event, r.address)
    delays = [e for e in mine if e.type is EventType.DELIVERY_DELAY]
    mta = _mta(details.get("reporting_mta"))
    said = _said(report.get("diagnostic_code"), report.get("status"))
    when = _after_send(r, event.at)
    summary = (
        what
        + (f"; reported{when}" if when else "")
        + (f", after {_count(len(delays), 'delay')}" if delays and r.complete else "")
        + (f"; {mta} answered {said}" if mta and said else "")
        + (f"; the answer was {said}" if said and not mta else "")
        + "."
    )
    return Diagnosis(code, summary, action)


_UNDETERMINED_BOUNCE_ACTION = (
    "Read the diagnostic code for the reason; if it is not clear, ask the recipient's "
    "provider, and do not keep mailing an address that keeps bouncing."
)
_BOUNCE_MEANINGS: dict[str, tuple[str, str]] = {
    # 002 (bounce record): a hard bounce cannot be fixed by retrying; check the
    # spelling and confirm the address with the recipient before mailing it again.
    "bounce.permanent.general": (
        "The receiving server refused the message for good (hard bounce)",
        "Do not retry: check the address's spelling and confirm it with the recipient "
        "before mailing it again; ask their provider if the reason is unclear.",
    ),
    # 003 (hard bounce) and 002: the address does not exist.
    "bounce.permanent.no_email": (
        "The recipient's provider says this address does not exist (hard bounce)",
        "Remove the address from your list, or correct it with the recipient; do not "
        "retry it as it is.",
    ),
    # 003 (hard bounce) and 002 (suppression list): the address recently hard-bounced
    # for some SES sender, so SES dropped the mail without trying.
    "bounce.permanent.suppressed": (
        "SES did not try to deliver: the address is on the SES global suppression list "
        "because it recently bounced as invalid",
        "Remove the address from your list; only if you are sure it is valid now, ask "
        "SES to remove it from the global suppression list.",
    ),
    # 002 (suppression list): the account-level list supersedes the global one.
    "bounce.permanent.on_account_suppression_list": (
        "SES did not send: the address is on your account's suppression list",
        "Remove it from the account-level suppression list only when you are sure it "
        "will no longer bounce or complain; otherwise stop mailing it.",
    ),
    # 003 (soft bounce) and 002 (delivery delay): a temporary condition; SES retried
    # for hours before giving up with this bounce.
    "bounce.transient.general": (
        "SES gave up after a temporary failure it kept meeting (soft bounce)",
        "You may send again later; if this address soft-bounces again, ask the "
        "recipient or their provider what is wrong.",
    ),
    # 003 (soft bounce: mailbox full) and 001.
    "bounce.transient.mailbox_full": (
        "The recipient's mailbox was full and stayed full (soft bounce)",
        "Send again later, or tell the recipient by another channel that their mailbox is full.",
    ),
    "bounce.transient.message_too_large": (
        "The receiving server refused the message as too large (soft bounce)",
        "Make the message smaller (fewer or smaller attachments, or links instead) and "
        "send it again.",
    ),
    # 001 (labelled as spam: content quality, authentication).
    "bounce.transient.content_rejected": (
        "The receiving server refused the message's content (soft bounce)",
        "Review the content and the domain's SPF, DKIM and DMARC; change what the "
        "provider objects to before sending again.",
    ),
    "bounce.transient.attachment_rejected": (
        "The receiving server refused an attachment (soft bounce)",
        "Remove the attachment or send a type the provider accepts, then send again.",
    ),
    # 002 (bounce record): the diagnostic code is the reason; ask the provider.
    BOUNCE_UNDETERMINED: (
        "The message bounced and SES could not tell why (undetermined bounce)",
        _UNDETERMINED_BOUNCE_ACTION,
    ),
}


def _delivered(r: RecipientState, mine: list[StoredEvent]) -> Diagnosis:
    delivery = _first(mine, EventType.DELIVERY)
    delays = [e for e in mine if e.type is EventType.DELIVERY_DELAY]
    details = delivery.details if delivery else {}
    ip = details.get("remote_mta_ip")
    answer = details.get("smtp_response")
    waited = f", after {_count(len(delays), 'delay')}" if delays and r.complete else ""
    accepted = (
        "The recipient's server"
        + (f" ({_quote(ip, 64)})" if ip else "")
        + " accepted the message"
        + _after_send(r, delivery.at if delivery else None)
        + waited
        + (f", answering {_quote(answer)}" if answer else "")
    )
    auto = next(
        (e for e in mine if e.type is EventType.BOUNCE and e.details.get("bounce_type") in _SOFT),
        None,
    )
    if auto is not None:
        # 003 (auto response): delivered, then the recipient's server answered by
        # itself (out of office); SES passes it on as a soft bounce beside the delivery.
        return Diagnosis(
            AUTO_REPLY,
            accepted + "; an automatic reply (such as out of office) came back after.",
            "Nothing to do: the mail arrived. Do not resend because of an automatic reply.",
        )
    # 001 and 002 (scenario 3): the 250 answer means the provider took the mail; its
    # own filters then choose inbox, spam folder or nothing.
    return Diagnosis(
        DELIVERED,
        accepted + ".",
        "Nothing to do. If the recipient cannot find it, ask them to look in spam; past "
        "this point only their provider can say where it went.",
    )


def _delayed(r: RecipientState, delays: list[StoredEvent]) -> Diagnosis:
    latest = delays[-1] if delays else None
    details = latest.details if latest else {}
    code = DELAY_CODES.get(details.get("delay_type") or "", DELAY_UNDETERMINED)
    what, action = _DELAY_MEANINGS[code]
    report = _report(latest, r.address) if latest else {}
    said = _said(report.get("diagnostic_code"), report.get("status"))
    mta = _mta(details.get("reporting_mta"))
    expires = details.get("expiration_time")
    if r.complete:
        head = "SES has delayed this message" + (
            f" {_count(len(delays), 'time')}" if delays else ""
        )
        waited = _waited(r)
    else:
        # One change's event only: when it came, not how many came before it.
        head = "SES delayed this message" + _after_send(r, latest.at if latest else None)
        waited = ""
    summary = (
        head
        + (f", waiting {waited} so far" if waited else "")
        + f"; the latest delay: {what}"
        + (f" ({mta} answered {said})" if mta and said else "")
        + (f" ({said})" if said and not mta else "")
        + (f"; SES retries until {_iso(expires)}" if expires else "")
        + (f"; overdue (no outcome {_span(r.overdue_after_ms)} after sending)" if r.overdue
           and r.overdue_after_ms is not None else "")
        + "."
    )  # fmt: skip
    return Diagnosis(code, summary, action)


# SES's delayType definitions (the deliveryDelay object of event publishing); 004
# for delays as a stage of sending (and what AWS Support needs), 002 for SES
# retrying such deliveries for hours, 000 for greylisting.
_RETRIES = "SES keeps retrying on its own until the expiration time"
_DELAY_MEANINGS: dict[str, tuple[str, str]] = {
    "delay.internal_failure": (
        "an internal problem inside SES",
        f"{_RETRIES}. If delays inside SES go on, contact AWS Support with the region, "
        "the sending identity's ARN and the message ID.",
    ),
    "delay.general": (
        "a failure during the conversation with the recipient's server",
        f"{_RETRIES}; some providers turn away unknown senders at first (greylisting) "
        "and accept a later try.",
    ),
    "delay.mailbox_full": (
        "the recipient's mailbox is full",
        f"{_RETRIES}; tell the recipient by another channel if the mail is urgent.",
    ),
    "delay.spam_detected": (
        "the recipient's server saw a lot of unsolicited mail from your account",
        f"{_RETRIES}; review your content and list quality before sending more to this provider.",
    ),
    "delay.recipient_server_error": (
        "the recipient's mail server has a temporary problem",
        f"{_RETRIES}; if it lasts, check with the recipient's provider (maintenance, "
        "outage) and hold further mail to it until it is fixed.",
    ),
    "delay.ip_failure": (
        "the recipient's provider is blocking or throttling the sending IP address",
        f"{_RETRIES}; check your sending IPs' reputation and slow down mail to this provider.",
    ),
    "delay.transient_communication_failure": (
        "a temporary failure talking to the recipient's server",
        f"{_RETRIES}; providers that greylist accept one of the later tries.",
    ),
    "delay.byoip_host_name_lookup_unavailable": (
        "SES could not look up the host name of your own (BYOIP) sending address",
        f"{_RETRIES}; check the reverse DNS (PTR) records of your BYOIP range.",
    ),
    "delay.sending_deferral": (
        "SES itself chose to defer sending this message for now",
        f"{_RETRIES}; nothing to change unless these deferrals keep growing.",
    ),
    DELAY_UNDETERMINED: (
        "a reason SES did not determine",
        f"{_RETRIES}; read the diagnostic code, and ask the recipient's provider if "
        "delays to it continue.",
    ),
}


def _pending(r: RecipientState) -> Diagnosis:
    waited = _waited(r)
    if r.overdue:
        # 004 (monitoring delays) and 000: no event yet may be a delay not published
        # (DeliveryDelay must be enabled on the configuration set's destination) or
        # a hold inside SES.
        after = _span(r.overdue_after_ms) if r.overdue_after_ms is not None else "long"
        return Diagnosis(
            PENDING_OVERDUE,
            f"SES accepted the message {waited or 'long'} ago and has reported no delivery, "
            f"bounce or delay since, past the {after} this tracker waits.",
            "Check that the configuration set publishes Delivery, Bounce and DeliveryDelay "
            "events here; then ask the recipient or their provider, and if SES still holds "
            "it, contact AWS Support with the region, identity ARN and message ID.",
        )
    # 003: the first delivery attempt normally comes within milliseconds.
    return Diagnosis(
        PENDING,
        (f"SES accepted the message {waited} ago" if waited else "SES accepted the message")
        + "; no delivery, bounce or delay has been reported yet.",
        "Nothing yet: most outcomes arrive within seconds; look again in a few minutes.",
    )


# --- figures and quoting ----------------------------------------------------------


def _first(events: list[StoredEvent], kind: EventType) -> StoredEvent | None:
    return next((e for e in events if e.type is kind), None)


def _report(event: StoredEvent | None, address: str) -> dict[str, Any]:
    if event is None:
        return {}
    for report in event.details.get("reports") or ():
        if isinstance(report, dict) and report.get("address") == address:
            return report
    return {}


def _after_send(r: RecipientState, at: int | None) -> str:
    if at is None or r.sent_at is None:
        return ""
    return f" {_span(max(0, at - r.sent_at))} after sending"


def _waited(r: RecipientState) -> str:
    if r.sent_at is None or r.now_ms is None:
        return ""
    return _span(max(0, r.now_ms - r.sent_at))


def _said(diagnostic: Any, status: Any) -> str:
    """SES's diagnostic text (and status code), quoted as data."""
    parts = []
    if diagnostic:
        parts.append(_quote(diagnostic))
    if status:
        parts.append(f"status {_quote(status, 16)}")
    return " with ".join(parts) if len(parts) == 2 else "".join(parts)


def _mta(raw: Any) -> str:
    """A reporting MTA as SES gives it ("dns; mx.example.com"), as quoted data."""
    if not isinstance(raw, str) or not raw.strip():
        return ""
    name = raw.split(";", 1)[1] if raw.lower().startswith("dns;") else raw
    return _quote(name.strip(), 100) if name.strip() else ""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """Outside text as data: one line, at most ``limit`` characters, in quotes."""
    text = _CONTROL.sub(" ", str(value)).strip()
    text = re.sub(r"\s{2,}", " ", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"“{text}”"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _span(ms: int) -> str:
    """A duration for people: 840 ms, 4.2 s, 3 min 5 s, 2 h 10 min, 1 d 4 h."""
    if ms < 1_000:
        return f"{ms} ms"
    seconds = ms / 1_000
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def _iso(ms: Any) -> str:
    return format_ms(ms) if isinstance(ms, int) else _quote(ms, 40)
