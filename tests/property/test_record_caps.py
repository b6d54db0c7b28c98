"""Per-message caps keep state independent of order: recipients past 50 an event and
100 a message, and events past the record's byte cap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service import state
from service.parser import MAX_RECIPIENTS
from tests.support import ses
from tests.support.fold import fold
from tests.support.strategies import CROWDED_ID as MID
from tests.support.strategies import crowded_message


@settings(max_examples=60, deadline=None)
@given(crowded_message(), st.randoms(use_true_random=False))
def test_the_kept_recipients_do_not_depend_on_order(events: list[dict], rng) -> None:
    reference, _ = fold([[event] for event in events])
    shuffled = list(events)
    rng.shuffle(shuffled)
    again, _ = fold([[event] for event in shuffled + shuffled[:2]])
    record = reference[MID]
    assert record == again[MID]
    assert len(record.recipients) <= state.MAX_RECIPIENTS
    # Each event keeps its own MAX_RECIPIENTS (parser) smallest, the record its
    # state.MAX_RECIPIENTS smallest of them all; either cap marks it truncated.
    per_event = [_named(event) for event in events]
    named = {address for names in per_event for address in sorted(names)[:MAX_RECIPIENTS]}
    assert set(record.recipients) == set(sorted(named)[: state.MAX_RECIPIENTS])
    cut = any(len(names) > MAX_RECIPIENTS for names in per_event)
    assert record.truncated is (cut or len(named) > state.MAX_RECIPIENTS)


def test_a_record_stops_growing_at_its_byte_cap() -> None:
    delays = [ses.delay(MID, ["a@x.com"], ses.SENT_AT + n) for n in range(200)]
    for delay in delays:
        delay["deliveryDelay"]["delayedRecipients"][0]["diagnosticCode"] = "d" * 1_000
    records, _ = fold([[delay] for delay in delays])
    record = records[MID]
    assert sum(map(len, record.blobs.values())) <= state.MAX_RECORD_BLOB_BYTES
    assert record.truncated
    assert record.recipient_status("a@x.com") == "delayed"


def _named(event: dict) -> list[str]:
    for section, key in (
        ("delivery", "recipients"),
        ("bounce", "bouncedRecipients"),
        ("deliveryDelay", "delayedRecipients"),
    ):
        if section in event:
            return [r if isinstance(r, str) else r["emailAddress"] for r in event[section][key]]
    return event["mail"]["destination"]
