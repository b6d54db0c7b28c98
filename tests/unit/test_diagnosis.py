"""Every code of the diagnosis table (README, HTTP API), from the seed records where
the seed documents have one, through the parser, the merge and the message view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from service import diagnosis, stats
from service.codec import decode_event
from service.diagnosis import CODES, RecipientState, diagnose
from service.timestamps import format_ms, parse_ms
from service.view import ViewOptions, recipient_diagnosis
from tests.support import ses
from tests.support.fold import fold

MINUTE = 60_000
OVERDUE_AFTER_MS = 15 * MINUTE
SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"

# The contract's closed table, written out: the module must hold exactly these.
TABLE = {
    "delivered",
    "auto_reply",
    "pending",
    "pending.overdue",
    *(
        f"delay.{name}"
        for name in (
            "internal_failure",
            "general",
            "mailbox_full",
            "spam_detected",
            "recipient_server_error",
            "ip_failure",
            "transient_communication_failure",
            "byoip_host_name_lookup_unavailable",
            "sending_deferral",
            "undetermined",
        )
    ),
    *(
        f"bounce.permanent.{name}"
        for name in ("general", "no_email", "suppressed", "on_account_suppression_list")
    ),
    *(
        f"bounce.transient.{name}"
        for name in (
            "general",
            "mailbox_full",
            "message_too_large",
            "content_rejected",
            "attachment_rejected",
        )
    ),
    "bounce.undetermined",
    "complaint",
    *(
        f"complaint.{name}"
        for name in ("abuse", "auth_failure", "fraud", "not_spam", "other", "virus")
    ),
    "complaint.on_account_suppression_list",
    "reject",
    "rendering_failure",
}


def seed(name: str) -> dict[str, Any]:
    return orjson.loads((SEEDS / f"{name}.json").read_bytes())


def diagnosed(
    records: list[dict[str, Any]], address: str, now_ms: int | None = None
) -> diagnosis.Diagnosis:
    """The recipient's diagnosis as the message view computes it, ``now_ms`` defaulting
    to a minute after the latest record's mail was sent (nothing overdue)."""
    merged, _ = fold([records])
    [record] = merged.values()
    sent = max(parse_ms(r["mail"]["timestamp"]) for r in records)
    options = ViewOptions(sent + MINUTE if now_ms is None else now_ms, OVERDUE_AFTER_MS)
    found = recipient_diagnosis(record, address, options)
    assert found.code in CODES
    assert found.summary and found.action
    assert "\n" not in found.summary and len(found.summary) <= diagnosis.SUMMARY_CHARS
    return found


def test_the_module_holds_exactly_the_contract_table() -> None:
    assert CODES == TABLE


def test_delay_codes_cover_the_delay_types_statistics_count() -> None:
    assert set(diagnosis.DELAY_CODES) == stats.DELAY_TYPES
    assert len(stats.DELAY_TYPES) == 10 and "SendingDeferral" in stats.DELAY_TYPES


# --- bounces: the seed's SNS bounce notification (002) -----------------------------

BOUNCED = "jane@example.com"


def bounce_seed(bounce_type: str = "Permanent", subtype: str | None = "General") -> dict:
    record = seed("bounce_notification")
    record["bounce"]["bounceType"] = bounce_type
    if subtype is None:
        del record["bounce"]["bounceSubType"]
    else:
        record["bounce"]["bounceSubType"] = subtype
    return record


def test_the_seed_hard_bounce_says_who_answered_what_and_to_check_the_address() -> None:
    found = diagnosed([bounce_seed()], BOUNCED)
    assert found.code == "bounce.permanent.general"
    assert "“email.example.com”" in found.summary  # the reporting MTA, without "dns;"
    assert "“smtp; 550 5.1.1 <jane@example.com> User not found”" in found.summary
    assert "5.1.1" in found.summary and "hard bounce" in found.summary
    assert "spelling" in found.action


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "code"),
    [
        ("Permanent", "General", "bounce.permanent.general"),
        ("Permanent", "NoEmail", "bounce.permanent.no_email"),
        ("Permanent", "Suppressed", "bounce.permanent.suppressed"),
        ("Permanent", "OnAccountSuppressionList", "bounce.permanent.on_account_suppression_list"),
        ("Permanent", "UnsubscribedRecipient", "bounce.permanent.general"),
        ("Permanent", None, "bounce.permanent.general"),
        ("Transient", "General", "bounce.transient.general"),
        ("Transient", "MailboxFull", "bounce.transient.mailbox_full"),
        ("Transient", "MessageTooLarge", "bounce.transient.message_too_large"),
        ("Transient", "ContentRejected", "bounce.transient.content_rejected"),
        ("Transient", "AttachmentRejected", "bounce.transient.attachment_rejected"),
        ("Transient", "bounce.permanent.general", "bounce.transient.general"),
        ("Undetermined", "Undetermined", "bounce.undetermined"),
        ("Undetermined", "NoEmail", "bounce.undetermined"),
    ],
)
def test_bounce_type_and_subtype_select_the_code(
    bounce_type: str, subtype: str | None, code: str
) -> None:
    assert diagnosed([bounce_seed(bounce_type, subtype)], BOUNCED).code == code


def test_a_suppression_list_drop_quotes_what_ses_said_and_says_ses_never_tried() -> None:
    record = bounce_seed("Permanent", "Suppressed")
    # The global suppression list's diagnostic code, as 002 quotes it.
    record["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = (
        "Amazon SES has suppressed sending to this address because it has a recent history "
        "of bouncing as an invalid address. For more information about how to remove an "
        "address from the suppression list, see the Amazon SES Developer Guide: "
        "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/remove-from-suppressionlist.html"
    )
    found = diagnosed([record], BOUNCED)
    assert found.code == "bounce.permanent.suppressed"
    assert "global suppression list" in found.summary
    assert "“Amazon SES has suppressed sending" in found.summary
    assert "…”" in found.summary  # SES's text is quoted only up to its bound
    assert "remove-from-suppressionlist" not in found.summary


def test_a_permanent_bounce_decides_over_an_earlier_soft_one_and_delays_are_counted() -> None:
    records = [
        ses.send("m", ["a@x.com"]),
        ses.delay("m", ["a@x.com"], ses.SENT_AT + MINUTE),
        ses.bounce("m", ["a@x.com"], ses.SENT_AT + 2 * MINUTE, "Transient"),
        ses.bounce("m", ["a@x.com"], ses.SENT_AT + 3 * MINUTE, "Permanent", subtype="NoEmail"),
    ]
    found = diagnosed(records, "a@x.com")
    assert found.code == "bounce.permanent.no_email"
    assert "3 min after sending, after 1 delay" in found.summary


def test_a_final_soft_bounce_after_retries_says_how_long_ses_tried() -> None:
    records = [
        ses.send("m", ["a@x.com"]),
        *(ses.delay("m", ["a@x.com"], ses.SENT_AT + n * 3_600_000) for n in (1, 4, 8)),
        ses.bounce("m", ["a@x.com"], ses.SENT_AT + 10 * 3_600_000 + 5 * MINUTE, "Transient"),
    ]
    found = diagnosed(records, "a@x.com")
    assert found.code == "bounce.transient.general"
    assert "10 h 5 min after sending, after 3 delays" in found.summary


# --- deliveries: the seed's SNS delivery notification (002) ------------------------


def test_the_seed_delivery_names_the_server_and_its_answer() -> None:
    found = diagnosed([seed("delivery_notification")], BOUNCED)
    assert found.code == "delivered"
    assert "“127.0.2.0”" in found.summary
    assert "“250 ok: Message 64111812 accepted”" in found.summary
    assert "spam" in found.action  # accepted is not the inbox (001, 002)


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_a_soft_bounce_beside_a_delivery_is_an_auto_reply(bounce_type: str) -> None:
    delivery = seed("delivery_notification")
    reply = bounce_seed(bounce_type, "General")
    reply["mail"]["messageId"] = delivery["mail"]["messageId"]
    for order in ([delivery, reply], [reply, delivery]):
        found = diagnosed(order, BOUNCED)
        assert found.code == "auto_reply"
        assert "automatic reply" in found.summary
        assert "Do not resend" in found.action


def test_delays_before_a_delivery_are_counted() -> None:
    records = [
        ses.send("m", ["a@x.com"]),
        ses.delay("m", ["a@x.com"], ses.SENT_AT + MINUTE),
        ses.delay("m", ["a@x.com"], ses.SENT_AT + 5 * MINUTE),
        ses.delivery("m", ["a@x.com"], ses.SENT_AT + 9 * MINUTE),
    ]
    assert "9 min after sending, after 2 delays" in diagnosed(records, "a@x.com").summary


# --- delays: the seed's DeliveryDelay event (004) ----------------------------------

DELAYED = "recipient@example.com"
DELAY_SENT = parse_ms("2020-06-16T00:15:40.641Z")


def delay_seed(delay_type: str | None, at_offset_ms: int = 0) -> dict:
    record = seed("delivery_delay_event")
    if delay_type is None:
        del record["deliveryDelay"]["delayType"]
    else:
        record["deliveryDelay"]["delayType"] = delay_type
    at = parse_ms(record["deliveryDelay"]["timestamp"]) + at_offset_ms
    record["deliveryDelay"]["timestamp"] = format_ms(at)
    return record


def test_the_seed_delay_says_how_long_how_often_and_what_the_server_said() -> None:
    found = diagnosed([delay_seed("TransientCommunicationFailure")], DELAYED)
    assert found.code == "delay.transient_communication_failure"
    assert "1 time" in found.summary and "waiting 1 min so far" in found.summary
    assert "“smtp; 421 4.4.1 Unable to connect to remote host”" in found.summary
    assert "2020-06-16T00:25:40.914Z" in found.summary  # when SES gives up
    assert "overdue" not in found.summary


@pytest.mark.parametrize(
    ("delay_type", "code"),
    [
        ("InternalFailure", "delay.internal_failure"),
        ("General", "delay.general"),
        ("MailboxFull", "delay.mailbox_full"),
        ("SpamDetected", "delay.spam_detected"),
        ("RecipientServerError", "delay.recipient_server_error"),
        ("IPFailure", "delay.ip_failure"),
        ("TransientCommunicationFailure", "delay.transient_communication_failure"),
        ("BYOIPHostNameLookupUnavailable", "delay.byoip_host_name_lookup_unavailable"),
        ("SendingDeferral", "delay.sending_deferral"),
        ("Undetermined", "delay.undetermined"),
        (None, "delay.undetermined"),
        ("delay.mailbox_full", "delay.undetermined"),
        ("mailboxfull", "delay.undetermined"),
    ],
)
def test_the_delay_type_selects_the_code(delay_type: str | None, code: str) -> None:
    assert diagnosed([delay_seed(delay_type)], DELAYED).code == code


def test_the_latest_delay_decides_whatever_order_they_came_in() -> None:
    early = delay_seed("MailboxFull")
    late = delay_seed("IPFailure", at_offset_ms=2 * MINUTE)
    for order in ([early, late], [late, early]):
        found = diagnosed(order, DELAYED, now_ms=DELAY_SENT + 20 * MINUTE)
        assert found.code == "delay.ip_failure"
        assert "2 times" in found.summary


def test_a_delay_past_the_overdue_limit_keeps_its_delay_code_and_says_overdue() -> None:
    found = diagnosed([delay_seed("SpamDetected")], DELAYED, now_ms=DELAY_SENT + 2 * 3_600_000)
    assert found.code == "delay.spam_detected"
    assert "waiting 2 h so far" in found.summary
    assert "overdue (no outcome 15 min after sending)" in found.summary


# --- nothing yet -------------------------------------------------------------------


def test_a_sent_message_is_pending_then_overdue() -> None:
    records = [ses.send("m", ["a@x.com"])]
    soon = diagnosed(records, "a@x.com", now_ms=ses.SENT_AT + 40_000)
    assert soon.code == "pending"
    assert "40 s ago" in soon.summary
    late = diagnosed(records, "a@x.com", now_ms=ses.SENT_AT + OVERDUE_AFTER_MS + 1)
    assert late.code == "pending.overdue"
    assert "past the 15 min this tracker waits" in late.summary
    assert "DeliveryDelay" in late.action and "AWS Support" in late.action


# --- complaints --------------------------------------------------------------------


def complaint(feedback_type: str | None, subtype: str | None = None) -> list[dict]:
    record = ses.complaint("m", ["a@x.com"], ses.SENT_AT + 5 * MINUTE)
    if feedback_type is None:
        del record["complaint"]["complaintFeedbackType"]
    else:
        record["complaint"]["complaintFeedbackType"] = feedback_type
    if subtype is not None:
        record["complaint"]["complaintSubType"] = subtype
    return [ses.send("m", ["a@x.com"]), ses.delivery("m", ["a@x.com"], ses.SENT_AT + 900), record]


@pytest.mark.parametrize(
    ("feedback_type", "code"),
    [
        ("abuse", "complaint.abuse"),
        ("auth-failure", "complaint.auth_failure"),
        ("fraud", "complaint.fraud"),
        ("not-spam", "complaint.not_spam"),
        ("other", "complaint.other"),
        ("virus", "complaint.virus"),
        (None, "complaint"),
        ("complaint.abuse", "complaint"),
        ("ABUSE", "complaint"),
    ],
)
def test_the_feedback_type_selects_the_complaint_code(feedback_type: str | None, code: str) -> None:
    found = diagnosed(complaint(feedback_type), "a@x.com")
    assert found.code == code
    assert "5 min after sending" in found.summary


def test_a_complaint_on_the_account_suppression_list_has_its_own_code() -> None:
    found = diagnosed(complaint(None, "OnAccountSuppressionList"), "a@x.com")
    assert found.code == "complaint.on_account_suppression_list"
    assert "suppression list" in found.summary


# --- dropped inside SES: the seed's Reject and Rendering Failure events (002) --------


def test_the_seed_reject_quotes_the_reason_and_says_ses_never_tried() -> None:
    found = diagnosed([seed("reject_event")], "recipient@example.com")
    assert found.code == "reject"
    assert "“Bad content”" in found.summary and "never tried" in found.summary
    assert "mailbox simulator" in found.action


def test_the_seed_rendering_failure_names_the_template_and_the_error() -> None:
    found = diagnosed([seed("rendering_failure_event")], "recipient@example.com")
    assert found.code == "rendering_failure"
    assert "“MyTemplate”" in found.summary
    assert "“Attribute 'attributeName' is not present in the rendering data.”" in found.summary
    assert "template data" in found.action


# --- outside text is data ----------------------------------------------------------


def test_event_strings_never_become_codes_and_quotes_are_one_bounded_line() -> None:
    hostile = "delay.general\n<script>alert(1)</script>\u2028" + "x" * 5_000
    records = [ses.send("m", ["a@x.com"]), ses.delay("m", ["a@x.com"], ses.SENT_AT + 1_000)]
    records[1]["deliveryDelay"]["delayType"] = hostile
    records[1]["deliveryDelay"]["delayedRecipients"][0]["diagnosticCode"] = hostile
    found = diagnosed(records, "a@x.com")
    assert found.code == "delay.undetermined"
    assert "\u2028" not in found.summary
    quoted = found.summary.split("“")[1].split("”")[0]
    assert len(quoted) == diagnosis.QUOTE_CHARS and quoted.endswith("…")


def test_every_code_of_the_table_is_reached_by_a_test_here() -> None:
    """The parametrized cases above and these reach all of TABLE (kept in step)."""
    reached = {
        diagnosed([bounce_seed(kind, sub)], BOUNCED).code
        for kind, subs in {
            "Permanent": diagnosis.PERMANENT_CODES,
            "Transient": diagnosis.TRANSIENT_CODES,
            "Undetermined": {"General": ""},
        }.items()
        for sub in subs
    }
    reached |= {diagnosed([delay_seed(t)], DELAYED).code for t in diagnosis.DELAY_CODES}
    reached |= {diagnosed(complaint(t), "a@x.com").code for t in [*diagnosis.COMPLAINT_CODES, None]}
    reached.add(diagnosed(complaint(None, "OnAccountSuppressionList"), "a@x.com").code)
    delivery = seed("delivery_notification")
    reply = bounce_seed("Transient")
    reply["mail"]["messageId"] = delivery["mail"]["messageId"]
    reached.add(diagnosed([delivery], BOUNCED).code)
    reached.add(diagnosed([delivery, reply], BOUNCED).code)
    sent = [ses.send("m", ["a@x.com"])]
    reached.add(diagnosed(sent, "a@x.com", now_ms=ses.SENT_AT).code)
    reached.add(diagnosed(sent, "a@x.com", now_ms=ses.SENT_AT + OVERDUE_AFTER_MS + 1).code)
    reached.add(diagnosed([seed("reject_event")], "recipient@example.com").code)
    reached.add(diagnosed([seed("rendering_failure_event")], "recipient@example.com").code)
    assert reached == TABLE


# --- one change and its event (forwarded items) ------------------------------------


def test_without_the_whole_record_the_sentence_claims_no_counts() -> None:
    merged, _ = fold([[delay_seed("MailboxFull")]])
    [record] = merged.values()
    [event] = [decode_event(blob) for blob in record.blobs.values()]
    found = diagnose(
        RecipientState(DELAYED, "delayed", (event,), DELAY_SENT, event.at, complete=False)
    )
    assert found.code == "delay.mailbox_full"
    assert "time" not in found.summary.split(";")[0]  # no "1 time": others may have come
    assert found.summary.startswith("SES delayed this message 9 min 59 s after sending;")
