import gzip
from pathlib import Path

import orjson
import pytest

from service.events import EventType
from service.parser import parse_payload
from tests.support import ses

MID = "0100018bcafe0001-aaaa-bbbb-cccc-000000000001-000000"


def one(body: bytes):
    result = parse_payload(body)
    assert not result.rejected, result.rejected
    assert len(result.events) == 1
    return result.events[0]


# --- the real records from the seed documents ------------------------------------


def test_seed_bounce_notification(seeds_dir: Path) -> None:
    event = one((seeds_dir / "bounce_notification.json").read_bytes())
    assert event.type is EventType.BOUNCE
    assert event.message_id == "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000"
    assert event.at == 1_453_906_778_237
    assert event.mail.sent_at == 1_453_906_778_237
    assert event.details["bounce_type"] == "Permanent"
    assert event.details["bounce_subtype"] == "General"
    assert event.details["feedback_id"].endswith("068a-000000")
    assert event.details["remote_mta_ip"] == "127.0.2.0"
    [report] = event.details["reports"]
    assert report["status"] == "5.1.1"
    assert report["action"] == "failed"
    assert "User not found" in report["diagnostic_code"]
    assert event.recipients == (report["address"],)
    assert event.mail.subject == "Hello"
    # commonHeaders.messageId is the sender's header, never the key.
    assert event.message_id != "custom-message-ID"


def test_seed_delivery_notification(seeds_dir: Path) -> None:
    event = one((seeds_dir / "delivery_notification.json").read_bytes())
    assert event.type is EventType.DELIVERY
    assert event.processing_ms == 546
    assert event.details["smtp_response"] == "250 ok: Message 64111812 accepted"
    assert event.details["remote_mta_ip"] == "127.0.2.0"
    assert "reporting_mta" not in event.details  # always SES's own host: not stored
    assert event.mail.source is not None


def test_seed_reject_event_uses_mail_timestamp(seeds_dir: Path) -> None:
    event = one((seeds_dir / "reject_event.json").read_bytes())
    assert event.type is EventType.REJECT
    assert event.details == {"reason": "Bad content"}
    assert event.at == event.mail.sent_at == 1_476_466_695_211
    # " ses:configuration-set" (stray space in AWS's example) is still found.
    assert event.mail.configuration_set == "ConfigSet"
    assert event.mail.tags["myCustomTag1"] == "myCustomTagValue1"


def test_seed_rendering_failure_reads_failure_section(seeds_dir: Path) -> None:
    event = one((seeds_dir / "rendering_failure_event.json").read_bytes())
    assert event.type is EventType.RENDERING_FAILURE
    assert event.details["template_name"] == "MyTemplate"
    assert "attributeName" in event.details["error_message"]
    assert event.at == event.mail.sent_at


def test_seed_delivery_delay(seeds_dir: Path) -> None:
    event = one((seeds_dir / "delivery_delay_event.json").read_bytes())
    assert event.type is EventType.DELIVERY_DELAY
    assert event.details["delay_type"] == "TransientCommunicationFailure"
    assert event.at == 1_592_267_140_095
    assert event.details["expiration_time"] == 1_592_267_140_914
    assert event.details["reports"][0]["status"] == "4.4.1"


def test_all_seeds_in_one_pretty_printed_file(seeds_dir: Path) -> None:
    body = b"".join(p.read_bytes() for p in sorted(seeds_dir.glob("*.json")))
    result = parse_payload(body)
    assert (len(result.events), result.rejected) == (5, [])


# --- every event type and envelope ------------------------------------------------


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (ses.send(MID, ["a@x.com"]), EventType.SEND),
        (ses.delivery(MID, ["a@x.com"], ses.SENT_AT + 900), EventType.DELIVERY),
        (ses.bounce(MID, ["a@x.com"], ses.SENT_AT + 900), EventType.BOUNCE),
        (ses.complaint(MID, ["a@x.com"], ses.SENT_AT + 900), EventType.COMPLAINT),
        (ses.delay(MID, ["a@x.com"], ses.SENT_AT + 900), EventType.DELIVERY_DELAY),
        (ses.reject(MID, ["a@x.com"]), EventType.REJECT),
        (ses.rendering_failure(MID, ["a@x.com"]), EventType.RENDERING_FAILURE),
        (ses.open_(MID, ["a@x.com"], ses.SENT_AT + 900), EventType.OPEN),
        (ses.click(MID, ["a@x.com"], ses.SENT_AT + 900), EventType.CLICK),
    ],
)
def test_every_event_type_in_every_envelope(record: dict, kind: EventType) -> None:
    lambda_records = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "Sns": {**ses.sns(record), "SigningCertUrl": "https://sns/x.pem"},
            }
        ]
    }
    for shape in (record, ses.sns(record), ses.eventbridge(record), lambda_records):
        event = one(orjson.dumps(shape))
        assert event.type is kind
        assert event.message_id == MID
        assert event.mail.sent_at == ses.SENT_AT


def test_engagement_names_the_recipient_only_when_there_is_one() -> None:
    assert one(ses.dumps(ses.open_(MID, ["a@x.com"], ses.SENT_AT))).recipients == ("a@x.com",)
    assert one(ses.dumps(ses.open_(MID, ["a@x.com", "b@x.com"], ses.SENT_AT))).recipients == ()


def test_click_details() -> None:
    event = one(ses.dumps(ses.click(MID, ["a@x.com"], ses.SENT_AT + 5)))
    assert event.details["link"] == "https://shop.example/track"
    assert event.at == ses.SENT_AT + 5


def test_notification_with_legacy_timestamps() -> None:
    record = {
        "notificationType": "Delivery",
        "mail": {
            "timestamp": "2018-10-08T14:05:45 +0000",
            "messageId": MID,
            "destination": ["A@X.com"],
        },
        "delivery": {
            "timestamp": "2018-10-08T14:05:46 +0000",
            "recipients": ["a@x.com"],
            "processingTimeMillis": 1000,
        },
    }
    event = one(orjson.dumps(record))
    assert (event.mail.sent_at, event.at) == (1_539_007_545_000, 1_539_007_546_000)
    # Addresses are matched case-insensitively.
    assert event.mail.destination == ("a@x.com",) == event.recipients


def test_offset_timestamps_are_normalised_to_utc() -> None:
    record = ses.delivery(MID, ["a@x.com"], ses.SENT_AT)
    record["delivery"]["timestamp"] = "2023-11-15T01:13:21.000+03:00"
    assert one(orjson.dumps(record)).at == ses.SENT_AT + 1_000


@pytest.mark.parametrize("separator", [b"\n", b"", b"\r\n", b"\n\n  "])
def test_several_records_per_payload(separator: bytes) -> None:
    records = [ses.send(MID, ["a@x.com"]), ses.delivery(MID, ["a@x.com"], ses.SENT_AT + 1)]
    result = parse_payload(ses.dumps(*records, sep=separator))
    assert [e.type for e in result.events] == [EventType.SEND, EventType.DELIVERY]
    array = parse_payload(orjson.dumps(records))
    assert [e.type for e in array.events] == [EventType.SEND, EventType.DELIVERY]


def test_eventbridge_account_level_events_feed_alerts_not_state() -> None:
    body = orjson.dumps(
        {
            "version": "0",
            "detail-type": "Sending Status Disabled",
            "source": "aws.ses",
            "account": "123456789012",
            "time": "2023-11-14T22:13:21Z",
            "region": "eu-west-1",
            "detail": {"sendingStatus": "DISABLED", "reason": "Bounce rate"},
        }
    )
    result = parse_payload(body)
    assert result.events == [] and result.rejected == []
    [account] = result.account_events
    assert account.sending_disabled and account.region == "eu-west-1"
    advisor = parse_payload(
        body.replace(b"Sending Status Disabled", b"Advisor Recommendation Status Open")
    )
    assert advisor.account_events[0].detail_type == "Advisor Recommendation Status Open"


# --- records with no delivery state: counted, with a reason ------------------------


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"Type": "SubscriptionConfirmation", "Message": "hi", "TopicArn": "t"}, "Subscription"),
        ({"notificationType": "Received", "mail": {"messageId": MID}}, "inbound"),
        ({"eventType": "Subscription", "mail": {}}, "Subscription event"),
        ({"eventType": "Delivery", "mail": {"timestamp": "2023-11-14T22:13:20Z"}}, "messageId"),
        ({"eventType": "Send", "send": {}}, "messageId"),
    ],
)
def test_records_without_state_are_ignored_with_a_reason(record: dict, needle: str) -> None:
    result = parse_payload(orjson.dumps(record))
    assert result.events == [] and result.rejected == []
    [issue] = result.ignored
    assert needle in issue.reason
    assert result.readable


# --- malformed input: a precise reason, and the other records survive ---------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (ses.dumps(ses.send(MID, ["a@x.com"]))[:-20], "invalid JSON"),
        (b"\xff\xfe{", "UTF-8"),
        (b"42", "JSON number, expected an object"),
        (orjson.dumps({"eventType": "Teleport", "mail": ses.mail(MID, [])}), "unknown SES event"),
        (orjson.dumps({"notificationType": "Zap", "mail": ses.mail(MID, [])}), "notificationType"),
        (orjson.dumps({**ses.send(MID, []), "mail": "x"}), "mail: expected an object"),
        (
            orjson.dumps(
                {**ses.send(MID, []), "mail": {**ses.mail(MID, []), "destination": "a@x"}}
            ),
            "mail.destination",
        ),
        (
            orjson.dumps({**ses.send(MID, []), "mail": {**ses.mail(MID, []), "messageId": 7}}),
            "mail.messageId",
        ),
        (
            orjson.dumps({**ses.send(MID, []), "mail": {**ses.mail(MID, []), "timestamp": "soon"}}),
            "mail.timestamp",
        ),
        (orjson.dumps({"eventType": "Delivery", "mail": ses.mail(MID, [])}), "delivery: missing"),
        (
            orjson.dumps({**ses.sns(ses.send(MID, [])), "Message": "{not json"}),
            "SNS Message is not JSON",
        ),
        (orjson.dumps({**ses.sns(ses.send(MID, [])), "Message": {"a": 1}}), "JSON string"),
        (orjson.dumps({**ses.sns(ses.send(MID, [])), "Type": "Weird"}), "unknown SNS message type"),
        (orjson.dumps({"hello": "world"}), "not an SES record"),
        (orjson.dumps(ses.eventbridge({"mail": {}})), "detail.not an SES record"),
        (orjson.dumps({"Records": [{"EventSource": "aws:s3"}]}), "EventSource"),
        (orjson.dumps({"Records": []}), "non-empty list"),
        (b"   \n  ", "empty payload"),
    ],
)
def test_malformed_input_gets_a_clear_reason(body: bytes, needle: str) -> None:
    result = parse_payload(body)
    assert result.events == []
    assert len(result.rejected) == 1, result.rejected
    assert needle in result.rejected[0].reason
    assert not result.readable


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["bounce"].update(bounceType="Soft"), "bounce.bounceType"),
        (lambda r: r["bounce"].update(bouncedRecipients="a@x.com"), "bouncedRecipients"),
        (lambda r: r["bounce"].update(bouncedRecipients=[{"emailAddress": 5}]), "emailAddress"),
        (lambda r: r["bounce"].update(timestamp=12), "bounce.timestamp"),
        (lambda r: r.update(bounce=[]), "bounce: expected an object"),
    ],
)
def test_wrong_types_name_the_field(mutate, needle: str) -> None:
    record = ses.bounce(MID, ["a@x.com"], ses.SENT_AT)
    mutate(record)
    [issue] = parse_payload(orjson.dumps(record)).rejected
    assert needle in issue.reason


def test_processing_time_must_be_an_integer() -> None:
    record = ses.delivery(MID, ["a@x.com"], ses.SENT_AT)
    record["delivery"]["processingTimeMillis"] = "fast"
    [issue] = parse_payload(orjson.dumps(record)).rejected
    assert "processingTimeMillis" in issue.reason


def test_one_bad_record_never_stops_the_others() -> None:
    good = ses.dumps(ses.send(MID, ["a@x.com"]))
    bad_truncated = good[:40]
    bad_type = orjson.dumps({"eventType": "Nope", "mail": ses.mail(MID, [])})
    for sep in (b"\n", b""):
        body = sep.join([good, bad_truncated, good, bad_type, good])
        result = parse_payload(body)
        assert len(result.events) == 3, (sep, result.rejected)
        assert len(result.rejected) == 2
        assert result.readable


def test_array_with_a_non_object_item() -> None:
    result = parse_payload(orjson.dumps([ses.send(MID, ["a@x.com"]), "oops", None]))
    assert len(result.events) == 1
    assert [i.index for i in result.rejected] == [1, 2]


def test_lambda_batch_reports_each_inner_record() -> None:
    good = {"EventSource": "aws:sns", "Sns": ses.sns(ses.send(MID, ["a@x.com"]))}
    bad = {"EventSource": "aws:sns", "Sns": {**ses.sns(ses.send(MID, [])), "Message": "{"}}
    result = parse_payload(orjson.dumps({"Records": [good, bad, good]}))
    assert result.records == 3
    assert len(result.events) == 2
    [issue] = result.rejected
    assert issue.reason.startswith("Records[1]:")


def test_ten_megabyte_body_is_refused_before_parsing() -> None:
    body = b"[" + b" " * (10 * 1024 * 1024) + b"]"
    result = parse_payload(body)
    [issue] = result.rejected
    assert "over the 8388608-byte limit" in issue.reason


def test_gzip_bytes_are_not_json() -> None:
    result = parse_payload(gzip.compress(ses.dumps(ses.send(MID, []))))
    assert result.rejected and not result.events


def test_oversized_message_id_is_rejected() -> None:
    record = ses.send("x" * 300, ["a@x.com"])
    [issue] = parse_payload(orjson.dumps(record)).rejected
    assert "mail.messageId" in issue.reason


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"a":' * 50_000, b"{}" + b"[" * 5_000, b"]" * 1_000]
)
def test_hostile_nesting_is_a_record_error_not_a_crash(body: bytes) -> None:
    result = parse_payload(body)
    assert result.rejected and not result.events


def test_deep_nesting_does_not_hide_the_records_around_it() -> None:
    good = ses.dumps(ses.send(MID, ["a@x.com"]))
    result = parse_payload(b"\n".join([good, b"[" * 50_000, good]))
    assert len(result.events) == 2
    assert any("nested too deeply" in issue.reason for issue in result.rejected)
