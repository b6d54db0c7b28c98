"""Tombstones: a write about to be merged loses an address erased after its message
was sent (and only then), whatever the events; the hash is keyed."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from service import state
from service.codec import decode_event, encode_batch
from service.dimensions import Dimensions
from service.erasure import erase
from service.tombstones import KEEP_S, Tombstones, digest, live, new_key
from tests.support.fold import SEEN_MS, events_of, fold
from tests.support.strategies import MESSAGE_ID, POOL, message_events


def _writes(events):
    return encode_batch(list(events_of(events)), SEEN_MS, Dimensions())


def _merged(writes) -> state.MessageRecord:
    record = state.MessageRecord()
    for write in writes:
        state.merge(record, write)
    return record


@settings(max_examples=150, deadline=None)
@given(message_events(), st.sampled_from(POOL))
def test_a_write_of_a_message_sent_before_the_erasure_arrives_without_the_address(
    events, address
) -> None:
    writes = _writes(events)
    view = Tombstones(new_key())
    view = Tombstones(view.key, {view.digest(address): max(w.sent_at for w in writes) + 1})
    stripped = view.strip(writes)
    record = _merged(stripped)
    assert address not in record.recipients
    for name, blob in record.blobs.items():
        event = decode_event(blob)
        assert address not in event.recipients and not name.endswith(address)
        assert all(r.get("address") != address for r in event.details.get("reports", []))
    # The other recipients end as an erasure after the merge leaves them.
    folded = copy.deepcopy(fold([events])[0][MESSAGE_ID])
    erase(folded, address)
    assert record.recipients == folded.recipients


@settings(max_examples=100, deadline=None)
@given(message_events(), st.sampled_from(POOL))
def test_a_message_sent_after_the_erasure_is_new_data(events, address) -> None:
    writes = _writes(events)
    key = new_key()
    first = min(w.sent_at for w in writes)
    view = Tombstones(key, {digest(key, address): first})
    assert view.strip(writes) == writes
    assert not view.forgotten(address, first) and view.forgotten(address, first - 1)


def test_without_tombstones_writes_pass_untouched_and_nothing_is_forgotten() -> None:
    view = Tombstones(new_key())
    assert not view.forgotten("a@x.com", 0)


def test_the_hash_is_keyed_and_old_tombstones_go() -> None:
    one, other = new_key(), new_key()
    assert digest(one, "a@x.com") != digest(other, "a@x.com")
    assert digest(one, "a@x.com") == digest(one, "a@x.com")
    assert "a@x.com" not in digest(one, "a@x.com")
    now = 10**13
    kept = live({"old": now - KEEP_S * 1000 - 1, "new": now - 1}, now)
    assert kept == {"new": now - 1}
