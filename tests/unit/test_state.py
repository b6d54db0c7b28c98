import itertools

import pytest

from service import state
from service.state import STATUSES, status_of
from tests.support import ses
from tests.support.fold import fold, view

MID = "m-1"
A, B = "a@x.com", "b@y.com"
T = ses.SENT_AT


def statuses(records) -> dict[str, str]:
    merged, _ = fold([records])
    record = merged[MID]
    return {address: record.recipient_status(address) for address in record.recipients}


def test_precedence_is_the_contracts() -> None:
    assert STATUSES == (
        "sent",
        "delayed",
        "delivered",
        "bounced",
        "complained",
        "rejected",
        "rendering_failed",
    )
    assert status_of(0) == state.SENT
    assert status_of(state.DELAY) == state.DELAYED
    assert status_of(state.DELAY | state.DELIVERY) == state.DELIVERED
    assert status_of(state.DELIVERY | state.HARD_BOUNCE) == state.BOUNCED
    assert status_of(state.HARD_BOUNCE | state.COMPLAINT) == state.COMPLAINED
    assert status_of(state.COMPLAINT | state.REJECT) == state.REJECTED
    assert status_of(state.REJECT | state.RENDERING_FAILURE) == state.RENDERING_FAILED


def test_status_table_matches_status_of() -> None:
    assert len(state.STATUS_TABLE) == state.ALL_FLAGS + 1
    for flags in range(state.ALL_FLAGS + 1):
        assert int(state.STATUS_TABLE[flags]) == status_of(flags)


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_soft_bounce_beside_delivery_stays_delivered_in_any_order(bounce_type: str) -> None:
    # SES rounds bounce times down, so the auto-reply may be stamped before delivery.
    events = [
        ses.send(MID, [A]),
        ses.delivery(MID, [A], T + 1_500),
        ses.bounce(MID, [A], T + 1_000, bounce_type),
    ]
    for order in itertools.permutations(events):
        assert statuses(order) == {A: "delivered"}


def test_soft_bounce_alone_is_bounced() -> None:
    assert statuses([ses.send(MID, [A]), ses.bounce(MID, [A], T + 9, "Transient")]) == {
        A: "bounced"
    }


def test_permanent_bounce_beside_delivery_is_bounced() -> None:
    events = [ses.delivery(MID, [A], T + 5), ses.bounce(MID, [A], T + 9, "Permanent")]
    for order in itertools.permutations(events):
        assert statuses(order) == {A: "bounced"}


def test_complaint_beats_delivery_and_bounce() -> None:
    events = [ses.delivery(MID, [A], T + 5), ses.complaint(MID, [A], T + 50)]
    assert statuses(events) == {A: "complained"}


@pytest.mark.parametrize(
    ("whole", "expected"), [(ses.reject, "rejected"), (ses.rendering_failure, "rendering_failed")]
)
def test_whole_message_outcomes_apply_to_every_recipient(whole, expected) -> None:
    events = [ses.send(MID, [A, B]), ses.delivery(MID, [A], T + 5), whole(MID, [A, B])]
    for order in itertools.permutations(events):
        assert statuses(order) == {A: expected, B: expected}


def test_destination_recipients_without_events_are_sent() -> None:
    events = [ses.delivery(MID, [A], T + 5)]
    events[0]["mail"]["destination"] = [A, B]
    assert statuses(events) == {A: "delivered", B: "sent"}


def test_recipients_named_only_by_events_are_added() -> None:
    events = [ses.send(MID, [A]), ses.bounce(MID, [B], T + 5)]
    events[1]["mail"]["destination"] = [A]
    assert statuses(events) == {A: "sent", B: "bounced"}


def test_message_status_is_the_highest_recipients() -> None:
    merged, _ = fold(
        [[ses.send(MID, [A, B]), ses.delivery(MID, [A], T + 5), ses.delay(MID, [B], T + 9)]]
    )
    assert merged[MID].status() == "delivered"
    merged, _ = fold(
        [[ses.send(MID, [A, B]), ses.delivery(MID, [A], T + 5), ses.bounce(MID, [B], T + 9)]]
    )
    assert merged[MID].status() == "bounced"


def test_engagement_is_not_status() -> None:
    events = [ses.send(MID, [A]), ses.open_(MID, [A], T + 50), ses.click(MID, [A], T + 60)]
    assert statuses(events) == {A: "sent"}


def test_duplicates_change_nothing_and_make_no_transitions() -> None:
    event = ses.delivery(MID, [A], T + 5)
    merged, transitions = fold([[ses.send(MID, [A]), event], [event], [event, event]])
    assert [(t.from_status, t.to_status) for t in transitions] == [
        (None, "sent"),
        ("sent", "delivered"),
    ]
    assert len(merged[MID].blobs) == 2


def test_transitions_carry_time_and_latency() -> None:
    _, transitions = fold([[ses.send(MID, [A])], [ses.delivery(MID, [A], T + 1_234)]])
    last = transitions[-1]
    assert (last.message_id, last.recipient, last.to_status) == (MID, A, "delivered")
    assert (last.at, last.latency_ms) == (T + 1_234, 1_234)


def test_same_bounce_from_notification_and_event_publishing_is_one_event() -> None:
    event = ses.bounce(MID, [A], T + 5)
    notification = {"notificationType": "Bounce", "mail": event["mail"], "bounce": event["bounce"]}
    merged, _ = fold([[event], [notification]])
    assert len(merged[MID].blobs) == 1


def test_timeline_is_capped_but_status_is_not() -> None:
    delays = [ses.delay(MID, [A], T + i) for i in range(state.MAX_RECORD_FIELDS + 10)]
    merged, _ = fold([delays, [ses.delivery(MID, [A], T + 10_000)]])
    record = merged[MID]
    assert record.truncated
    assert len(record.blobs) + len(record.recipients) == state.MAX_RECORD_FIELDS
    assert record.recipient_status(A) == "delivered"


def test_header_merge_keeps_the_richest_version() -> None:
    event = ses.delivery(MID, [A], T + 5)
    bare = {
        "notificationType": "Delivery",
        "mail": {"timestamp": event["mail"]["timestamp"], "messageId": MID, "destination": [A]},
        "delivery": event["delivery"],
    }
    for order in ([bare, event], [event, bare]):
        result = view(order, MID)
        assert result["subject"] == "Your order"
        assert result["configuration_set"] == "transactional"
