"""The parser under hostile input: bounded work, bounded answers, capped fields."""

from __future__ import annotations

import orjson
import pytest

from service import parser
from service.events import MAX_ISSUES_KEPT, Reason
from service.parser import MAX_RECIPIENTS, parse_payload
from tests.support import ses

MID = "0100018bcafe0001-aaaa-bbbb-cccc-000000000001-000000"
GOOD = ses.dumps(ses.bounce(MID, ["a@x.com"], ses.SENT_AT + 5))
NOW = ses.SENT_AT + 60_000

# Shapes that made the old splitter rescan to the end for every broken record.
HOSTILE = {
    "nested arrays across lines": b'{"a":[\n',
    "escaped quotes after }{": b'}{\\"',
    "unclosed brackets": b"[",
    "truncated records back to back": GOOD[:-7],
    "tiny objects back to back, one open": b'{"x":1}{',
    "record openers only": b'{"eventType":',
    "deep nesting between lines": b"[" * 600 + b"\n{",
    "good records": GOOD,
    "junk lines between records": b"not json\n" + GOOD + b"\n",
    "junk lines, then a broken object line": b"x\n" + GOOD + b"\n{\n",
    "white space lines": b" \r\n\t\n\n",
}


@pytest.mark.parametrize("unit", HOSTILE.values(), ids=HOSTILE.keys())
def test_work_is_linear_in_the_payload_for_every_shape(unit: bytes) -> None:
    """Counted, not timed: characters read, rescans included, per payload byte."""
    for size in (10_000, 100_000):
        body = unit * (size // len(unit))
        result = parse_payload(body)
        assert result.scanned <= 6 * len(body) + 200_000, (size, result.scanned)


def test_a_million_tiny_bad_records_give_a_bounded_answer() -> None:
    body = b"[" + b",".join([b"1"] * 1_000_000) + b"]"
    result = parse_payload(body)
    assert len(result.rejected) == MAX_ISSUES_KEPT
    assert result.rejected_count == parser.MAX_RECORDS_PER_PAYLOAD + 1
    assert result.codes[Reason.NOT_OBJECT] == parser.MAX_RECORDS_PER_PAYLOAD
    assert result.codes[Reason.TOO_MANY] == 1


def test_every_issue_is_counted_but_only_the_first_are_kept() -> None:
    body = b"\n".join([b'{"eventType": "Zap", "mail": {"messageId": "m"}}'] * 500 + [GOOD])
    result = parse_payload(body)
    assert (result.rejected_count, len(result.rejected)) == (500, MAX_ISSUES_KEPT)
    assert result.codes == {Reason.UNKNOWN_TYPE: 500}
    assert len(result.events) == 1


def test_reason_codes_come_from_the_closed_set() -> None:
    bodies = [b"{", b"\xff", b"[1]", b'{"a": 1}', b'{"eventType": "Zap"}', GOOD[:40]]
    for body in bodies:
        for issue in parse_payload(body).rejected:
            assert isinstance(issue.code, Reason)


def test_a_truncated_record_does_not_swallow_the_next() -> None:
    other = ses.dumps(ses.send(MID + "2", ["b@x.com"]))
    body = GOOD[: len(GOOD) // 2] + other + GOOD
    result = parse_payload(body)
    assert sorted(event.message_id for event in result.events) == [MID, MID + "2"]
    assert result.rejected_count == 1


def test_braces_inside_strings_do_not_split_a_record() -> None:
    record = ses.send(MID, ["a@x.com"])
    record["mail"]["commonHeaders"]["subject"] = "a }{ b }\n{ c"
    body = ses.dumps(record) + ses.dumps(ses.send(MID + "2", ["b@x.com"]))
    result = parse_payload(body)
    assert (len(result.events), result.rejected_count) == (2, 0)


# --- caps --------------------------------------------------------------------------


def test_recipients_past_the_cap_are_dropped_the_same_whatever_their_order() -> None:
    addresses = [f"r{n:04d}@x.com" for n in range(MAX_RECIPIENTS + 50)]
    forward = parse_payload(ses.dumps(ses.send(MID, addresses)))
    backward = parse_payload(ses.dumps(ses.send(MID, addresses[::-1])))
    [kept], [kept_too] = forward.events, backward.events
    assert len(kept.recipients) == MAX_RECIPIENTS
    assert set(kept.recipients) == set(kept_too.recipients) == set(addresses[:MAX_RECIPIENTS])
    assert forward.recipients_dropped == backward.recipients_dropped == 50


def test_detail_strings_are_cut_to_their_documented_lengths() -> None:
    record = ses.bounce(MID, ["a@x.com"], ses.SENT_AT + 5)
    record["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "x" * 100_000
    record["bounce"]["reportingMTA"] = "m" * 100_000
    record["mail"]["tags"] = {"k" * 1_000: ["v" * 1_000] * 50}
    [event] = parse_payload(orjson.dumps(record)).events
    assert len(event.details["reports"][0]["diagnostic_code"]) == 1_000
    assert len(event.details["reporting_mta"]) == parser.MAX_DETAIL_CHARS
    [(name, values)] = event.mail.tags.items()
    assert len(name) == parser.MAX_TAG_CHARS
    assert len(values) == parser.MAX_TAG_VALUES and {len(v) for v in values} == {256}


def test_a_payload_holds_a_bounded_number_of_records() -> None:
    body = b"\n".join([GOOD] * (parser.MAX_RECORDS_PER_PAYLOAD + 10))
    result = parse_payload(body, max_bytes=10**9)
    assert len(result.events) == parser.MAX_RECORDS_PER_PAYLOAD
    assert result.codes == {Reason.TOO_MANY: 1}


# --- 5. time sanity ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        ses.delivery(MID, ["a@x.com"], NOW + 86_400_000 + 1_000),
        ses.send(MID, ["a@x.com"], sent_at=NOW + 86_400_000 + 1_000),
        ses.eventbridge_account("Sending Status Disabled", NOW + 86_400_000 + 1_000),
    ],
    ids=["event time", "mail.timestamp", "account event"],
)
def test_events_dated_past_the_allowed_future_are_rejected(record: dict) -> None:
    result = parse_payload(orjson.dumps(record), latest_ms=NOW + 86_400_000)
    assert (result.accepted, result.codes) == (0, {Reason.FUTURE_TIMESTAMP: 1})
    assert "SES_TRACKER_MAX_FUTURE_S" in result.rejected[0].reason


def test_the_delay_expiration_is_ahead_by_nature() -> None:
    record = ses.delay(MID, ["a@x.com"], NOW)
    record["deliveryDelay"]["expirationTime"] = "2199-01-01T00:00:00.000Z"
    result = parse_payload(orjson.dumps(record), latest_ms=NOW + 1_000)
    assert result.accepted == 1
