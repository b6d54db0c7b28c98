"""Issue #23.2: a recipient that is not an address is dropped from its event
(bad_address, counted); the record is rejected only when no recipient is left."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from service.events import EventType, Reason
from service.parser import MAX_RECIPIENTS, parse_payload
from service.pipeline import Pipeline
from service.settings import Settings
from service.stores import MemoryStore
from tests.support import ses
from tests.support.push import in_process

MID = "0100018bcafe0001-aaaa-bbbb-cccc-000000000023-000000"
AT = ses.SENT_AT + 5_000
BAD = "a@b@c"

# Every event type that names recipients of its own, with where it names them.
OWN_LISTS: dict[str, tuple[Callable[[list[str]], dict[str, Any]], str]] = {
    "delivery": (lambda r: ses.delivery(MID, r, AT), "delivery.recipients[0]"),
    "bounce": (lambda r: ses.bounce(MID, r, AT), "bounce.bouncedRecipients[0].emailAddress"),
    "complaint": (
        lambda r: ses.complaint(MID, r, AT),
        "complaint.complainedRecipients[0].emailAddress",
    ),
    "delay": (lambda r: ses.delay(MID, r, AT), "deliveryDelay.delayedRecipients[0].emailAddress"),
}
# Event types whose recipients are mail.destination.
BY_DESTINATION: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "send": lambda r: ses.send(MID, r),
    "reject": lambda r: ses.reject(MID, r),
    "rendering failure": lambda r: ses.rendering_failure(MID, r),
    "open": lambda r: ses.open_(MID, r, AT),
    "click": lambda r: ses.click(MID, r, AT),
}


def parse(record: dict[str, Any]):
    return parse_payload(orjson.dumps(record))


@pytest.mark.parametrize("build", [b for b, _ in OWN_LISTS.values()], ids=OWN_LISTS.keys())
def test_a_bad_recipient_is_dropped_and_the_good_one_kept(build) -> None:
    result = parse(build([BAD, "Good@X.com", "@x.com"]))
    [event] = result.events
    assert event.recipients == ("good@x.com",)
    assert "a@b@c" not in event.mail.destination and event.mail.destination == ("good@x.com",)
    # Two in the event's own list, two in mail.destination: each one counted.
    assert result.dropped == {Reason.BAD_ADDRESS: 4}
    assert result.recipients_dropped == 4
    assert result.rejected_count == 0


@pytest.mark.parametrize(("build", "path"), OWN_LISTS.values(), ids=OWN_LISTS.keys())
def test_an_event_with_no_address_left_is_rejected(build, path: str) -> None:
    record = build([BAD])
    record["mail"]["destination"] = ["jane@example.com"]
    result = parse(record)
    assert result.events == []
    assert result.codes == {Reason.BAD_ADDRESS: 1}
    [issue] = result.rejected
    assert issue.code is Reason.BAD_ADDRESS
    assert path in issue.reason and "more than one @" in issue.reason
    # The record is rejected, not its recipients dropped: counted once.
    assert result.dropped == {} and result.recipients_dropped == 0


@pytest.mark.parametrize("build", BY_DESTINATION.values(), ids=BY_DESTINATION.keys())
def test_a_destination_of_non_addresses_rejects_the_events_that_go_by_it(build) -> None:
    result = parse(build(["idx", "jane@"]))
    assert (result.accepted, result.codes) == (0, {Reason.BAD_ADDRESS: 1})
    assert "mail.destination[0]: no @" in result.rejected[0].reason


def test_a_status_event_keeps_its_recipients_when_only_the_destination_is_bad() -> None:
    record = ses.bounce(MID, ["jane@example.com"], AT)
    record["mail"]["destination"] = [BAD]
    result = parse(record)
    [event] = result.events
    assert (event.recipients, event.mail.destination) == (("jane@example.com",), ())
    assert result.dropped == {Reason.BAD_ADDRESS: 1}


def test_an_empty_destination_is_not_a_bad_address() -> None:
    result = parse(ses.send(MID, []))
    assert (result.accepted, result.dropped) == (1, {})


@pytest.mark.parametrize("item", [None, 5, ["a@x.com"], {"emailAddress": "a@x.com"}])
def test_a_destination_item_that_is_not_a_string_is_dropped(item: Any) -> None:
    result = parse(ses.send(MID, ["jane@example.com", item]))
    [event] = result.events
    assert event.recipients == ("jane@example.com",)
    assert result.dropped == {Reason.BAD_ADDRESS: 1}


def test_a_report_without_an_email_address_is_dropped() -> None:
    record = ses.bounce(MID, ["jane@example.com", "mary@example.com"], AT)
    del record["bounce"]["bouncedRecipients"][1]["emailAddress"]
    [event] = parse(record).events
    assert event.recipients == ("jane@example.com",)
    assert [r["address"] for r in event.details["reports"]] == ["jane@example.com"]


def test_display_names_and_quoted_local_parts_are_addresses() -> None:
    record = ses.bounce(MID, ['"Jane Doe" <Jane@Example.com>', '"a@b"@example.com'], AT)
    [event] = parse(record).events
    assert event.recipients == ("jane@example.com", '"a@b"@example.com')


def test_an_open_is_not_pinned_on_the_one_good_recipient_of_two() -> None:
    """SES cannot say which recipient of two opened; dropping one must not make it
    look as if the other did."""
    [event] = parse(ses.open_(MID, ["jane@example.com", BAD], AT)).events
    assert event.type is EventType.OPEN and event.recipients == ()
    [single] = parse(ses.open_(MID, ["jane@example.com"], AT)).events
    assert single.recipients == ("jane@example.com",)


def test_bad_addresses_are_dropped_before_the_recipient_cap() -> None:
    """Junk cannot push real recipients past the per-event cap."""
    junk = [f"junk{n}" for n in range(500)]
    good = [f"r{n:03d}@x.com" for n in range(MAX_RECIPIENTS)]
    [event] = parse(ses.send(MID, junk + good)).events
    assert sorted(event.recipients) == good


def test_a_wrapped_record_is_judged_the_same() -> None:
    result = parse_payload(
        ses.dumps(ses.sns(ses.send(MID, [BAD])), ses.eventbridge(ses.delivery(MID, [BAD], AT)))
    )
    assert result.codes == {Reason.BAD_ADDRESS: 2}
    assert "detail.delivery.recipients" in result.rejected[1].reason


def test_the_pipeline_counts_drops_and_rejections_by_code() -> None:
    pipeline = Pipeline(MemoryStore())
    pipeline.parse(ses.dumps(ses.send(MID, ["jane@example.com", BAD]), ses.send(MID, [BAD])), "h")
    counters = pipeline.counters["h"]
    assert counters.dropped_reasons == {"bad_address": 1}
    assert counters.reasons == {"bad_address": 1}
    assert (counters.records, counters.rejected, counters.recipients_dropped) == (2, 1, 1)


async def test_an_operator_sees_bad_addresses_in_the_answer_readyz_and_metrics() -> None:
    body = ses.dumps(
        ses.send(MID, ["jane@example.com", BAD]),
        ses.send(MID + "-2", ["@nobody"]),
        ses.send(MID + "-3", [f"r{n:03d}@x.com" for n in range(MAX_RECIPIENTS + 5)]),
    )
    async with in_process(Settings(_env_file=None)) as (client, admin):
        answer = (await client.post("/v1/events", content=body)).json()
        ready = (await client.get("/readyz")).json()
        metrics = (await admin.get("/metrics")).text
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    assert answer["error_codes"] == {"bad_address": 1}
    assert answer["errors"][0]["index"] == 1
    assert ready["sources"]["http"]["recipients_dropped"] == {"bad_address": 1, "too_many": 5}
    assert 'ses_tracker_records_rejected_total{reason="bad_address",source="http"} 1.0' in metrics
    assert 'ses_tracker_recipients_dropped_total{reason="bad_address",source="http"} 1.0' in metrics
    assert 'ses_tracker_recipients_dropped_total{reason="too_many",source="http"} 5.0' in metrics
