from service.view import ViewOptions
from tests.support import ses
from tests.support.fold import SEEN_MS, view

MID = "m-1"
A, B = "a@x.com", "b@y.com"
T = ses.SENT_AT

CONTRACT_KEYS = {
    "message_id",
    "status",
    "overdue",
    "sent_at",
    "source",
    "subject",
    "configuration_set",
    "tags",
    "recipients",
    "latency_ms",
    "events",
}
RECIPIENT_KEYS = {
    "address",
    "status",
    "delivered_at",
    "bounce",
    "complaint",
    "delays",
    "opened_at",
    "clicked_at",
    "latency_ms",
}


def test_view_has_the_contract_shape() -> None:
    result = view([ses.send(MID, [A]), ses.delivery(MID, [A], T + 800)], MID)
    assert result.keys() >= CONTRACT_KEYS
    assert result["recipients"][0].keys() >= RECIPIENT_KEYS
    assert result["sent_at"] == "2023-11-14T22:13:20.000Z"
    assert result["tags"] == {"ses:configuration-set": "transactional", "team": "orders"}
    assert [e["type"] for e in result["events"]] == ["send", "delivery"]
    assert result["events"][1]["at"] == "2023-11-14T22:13:20.800Z"


def test_recipient_latencies() -> None:
    records = [
        ses.send(MID, [A]),
        ses.delay(MID, [A], T + 2_000),
        ses.delay(MID, [A], T + 5_000),
        ses.delivery(MID, [A], T + 9_000),
        ses.open_(MID, [A], T + 19_000),
        ses.click(MID, [A], T + 29_500),
        ses.complaint(MID, [A], T + 60_000),
    ]
    [recipient] = view(records, MID)["recipients"]
    assert recipient["status"] == "complained"
    assert recipient["latency_ms"] == {
        "send_to_delivery": 9_000,
        "send_to_first_delay": 2_000,
        "send_to_complaint": 60_000,
        "delivery_to_open": 10_000,
        "delivery_to_click": 20_500,
        "processing_time": 9_000,
        "ingest_lag": SEEN_MS - (T + 60_000),
    }
    assert [d["at"] for d in recipient["delays"]] == [
        "2023-11-14T22:13:22.000Z",
        "2023-11-14T22:13:25.000Z",
    ]
    assert recipient["delays"][0]["delay_type"] == "TransientCommunicationFailure"
    assert recipient["delays"][0]["status"] == "4.4.1"
    assert recipient["complaint"]["feedback_type"] == "abuse"


def test_bounce_stamped_before_send_gives_zero_not_negative() -> None:
    records = [ses.send(MID, [A]), ses.bounce(MID, [A], T - 237)]
    [recipient] = view(records, MID)["recipients"]
    assert recipient["latency_ms"]["send_to_bounce"] == 0
    assert recipient["bounce"]["type"] == "Permanent"
    assert recipient["bounce"]["diagnostic_code"] == "smtp; 550 5.1.1 user unknown"


def test_auto_reply_bounce_is_a_note_on_a_delivered_recipient() -> None:
    records = [ses.delivery(MID, [A], T + 1_500), ses.bounce(MID, [A], T + 1_000, "Transient")]
    [recipient] = view(records, MID)["recipients"]
    assert recipient["status"] == "delivered"
    assert recipient["bounce"] is None
    assert recipient["notes"][0]["kind"] == "auto_reply"
    assert recipient["notes"][0]["bounce"]["type"] == "Transient"


def test_message_latency_is_the_slowest_recipient() -> None:
    records = [
        ses.send(MID, [A, B]),
        ses.delivery(MID, [A], T + 1_000),
        ses.delivery(MID, [B], T + 4_000),
    ]
    result = view(records, MID)
    assert result["latency_ms"]["send_to_delivery"] == 4_000


def test_overdue_only_while_pending_past_the_deadline() -> None:
    late = ViewOptions(now_ms=T + 901_000, overdue_after_ms=900_000)
    early = ViewOptions(now_ms=T + 899_000, overdue_after_ms=900_000)
    pending = [ses.send(MID, [A, B]), ses.delay(MID, [B], T + 5_000)]
    assert view(pending, MID, late)["overdue"] is True
    assert [r["overdue"] for r in view(pending, MID, late)["recipients"]] == [True, True]
    assert view(pending, MID, early)["overdue"] is False
    done = [*pending, ses.delivery(MID, [A, B], T + 9_000)]
    assert view(done, MID, late)["overdue"] is False


def test_send_time_known_without_a_send_event() -> None:
    result = view([ses.delivery(MID, [A], T + 700)], MID)
    assert result["sent_at"] == "2023-11-14T22:13:20.000Z"
    assert result["recipients"][0]["latency_ms"]["send_to_delivery"] == 700


def test_multi_recipient_open_is_message_level() -> None:
    result = view([ses.send(MID, [A, B]), ses.open_(MID, [A, B], T + 700)], MID)
    assert result["opened_at"] == "2023-11-14T22:13:20.700Z"
    assert [r["opened_at"] for r in result["recipients"]] == [None, None]


def test_each_recipient_has_a_diagnosis_and_its_suppression_as_given() -> None:
    from service.suppressions import Suppression
    from service.view import message_view
    from tests.support.fold import OPTIONS, fold

    records = [
        ses.send(MID, [A, B]),
        ses.delivery(MID, [A], T + 800),
        ses.bounce(MID, [B], T + 1_500),
    ]
    merged, _ = fold([records])
    entry = Suppression(B, "bounce", T - 86_400_000, "earlier-message", "General")
    result = message_view(MID, merged[MID], OPTIONS, {B: entry})
    first, second = result["recipients"]
    assert first["diagnosis"]["code"] == "delivered" and first["suppressed"] is None
    assert set(second["diagnosis"]) == {"code", "summary", "action"}
    assert second["diagnosis"]["code"] == "bounce.permanent.general"
    assert second["suppressed"] == {
        "reason": "bounce",
        "since": "2023-11-13T22:13:20.000Z",
        "message_id": "earlier-message",
    }
    # Without a suppression read (profiles, exports) every recipient shows null.
    assert all(r["suppressed"] is None for r in view(records, MID)["recipients"])
