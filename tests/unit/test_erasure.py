"""Erasing an address from a record: nothing of it stays, nothing else changes."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from service.codec import decode_event, encode_stored
from service.erasure import erase
from tests.support.fold import fold
from tests.support.strategies import MESSAGE_ID, POOL, message_events


@settings(max_examples=100, deadline=None)
@given(message_events(), st.sampled_from(POOL))
def test_an_erased_address_is_nowhere_in_the_record(events, address) -> None:
    records, _ = fold([events])
    record = records[MESSAGE_ID]
    before = copy.deepcopy(record)
    changed = erase(record, address)
    assert changed == (record != before)
    assert address not in record.recipients
    for name, blob in record.blobs.items():
        event = decode_event(blob)
        assert address not in event.recipients and not name.endswith(address)
        assert all(r.get("address") != address for r in event.details.get("reports", []))
    # The other recipients, the header and the message's own flags are untouched.
    assert record.recipients == {a: f for a, f in before.recipients.items() if a != address}
    assert (record.header, record.message_flags) == (before.header, before.message_flags)
    assert not erase(record, address)  # erasing twice changes nothing


@given(message_events())
def test_a_stored_event_encodes_back_to_its_blob(events) -> None:
    records, _ = fold([events])
    for blob in records[MESSAGE_ID].blobs.values():
        assert encode_stored(decode_event(blob)) == blob
