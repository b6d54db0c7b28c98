"""14. A record without mail.timestamp still says what happened to its recipients."""

from __future__ import annotations

import orjson

from service.events import Reason
from service.parser import parse_payload
from service.view import message_view
from tests.support import ses
from tests.support.fold import OPTIONS, fold

MID = "0100018blenient-0000-0000-0000-000000000000-000000"
T = ses.SENT_AT


def without_send_time(record: dict) -> dict:
    del record["mail"]["timestamp"]
    return record


def test_an_event_with_its_own_time_is_read_without_mail_timestamp() -> None:
    result = parse_payload(orjson.dumps(without_send_time(ses.delivery(MID, ["a@x.com"], T + 9))))
    [event] = result.events
    assert event.mail.sent_at_known is False
    assert event.mail.sent_at == event.at == T + 9  # orders and indexes, nothing more


def test_events_timed_only_by_mail_timestamp_still_need_it() -> None:
    for record in (ses.send(MID, ["a@x.com"]), ses.reject(MID, ["a@x.com"])):
        result = parse_payload(orjson.dumps(without_send_time(record)))
        assert result.codes == {Reason.MISSING_FIELD: 1}
        assert "mail.timestamp" in result.rejected[0].reason


def test_status_without_a_send_time_has_no_latency_and_is_never_overdue() -> None:
    delayed = without_send_time(ses.delay(MID, ["a@x.com", "b@x.com"], T + 5))
    delivered = without_send_time(ses.delivery(MID, ["b@x.com"], T + 60_000))
    records, transitions = fold([[delayed], [delivered]])
    view = message_view(MID, records[MID], OPTIONS)  # "now" is long after T
    assert view["sent_at"] is None and view["overdue"] is False
    statuses = {r["address"]: r["status"] for r in view["recipients"]}
    assert statuses == {"a@x.com": "delayed", "b@x.com": "delivered"}
    b = next(r for r in view["recipients"] if r["address"] == "b@x.com")
    assert b["latency_ms"].get("send_to_delivery") is None
    assert view["notes"] and "mail.timestamp" in view["notes"][0]
    assert {t.latency_ms for t in transitions} == {None}


def test_a_later_event_brings_the_send_time() -> None:
    delivered = without_send_time(ses.delivery(MID, ["a@x.com"], T + 60_000))
    records, _ = fold([[delivered], [ses.send(MID, ["a@x.com"])]])
    view = message_view(MID, records[MID], OPTIONS)
    assert view["sent_at"] == "2023-11-14T22:13:20.000Z" and view["notes"] == []
    assert view["recipients"][0]["latency_ms"]["send_to_delivery"] == 60_000
