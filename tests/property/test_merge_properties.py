"""state(events) is the same for every ordering, duplication and batching."""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from service.view import message_view
from tests.support.fold import OPTIONS, fold
from tests.support.strategies import MESSAGE_ID, deliveries, message_events

settings.register_profile("default", max_examples=150, deadline=None)
settings.load_profile("default")


@given(st.data())
def test_any_order_duplication_and_batching_gives_the_same_state(data: st.DataObject) -> None:
    events = data.draw(message_events())
    reference, _ = fold([events])
    batches = data.draw(deliveries(events))
    merged, _ = fold(batches)
    assert merged[MESSAGE_ID] == reference[MESSAGE_ID]
    assert message_view(MESSAGE_ID, merged[MESSAGE_ID], OPTIONS) == message_view(
        MESSAGE_ID, reference[MESSAGE_ID], OPTIONS
    )


@given(st.data())
def test_transitions_chain_without_duplicates_to_the_final_status(data: st.DataObject) -> None:
    events = data.draw(message_events())
    batches = data.draw(deliveries(events))
    merged, transitions = fold(batches)
    by_recipient: dict[str, list] = defaultdict(list)
    for transition in transitions:
        by_recipient[transition.recipient].append(transition)
    record = merged[MESSAGE_ID]
    assert by_recipient.keys() == record.recipients.keys()
    for address, chain in by_recipient.items():
        assert chain[0].from_status is None
        for before, after in itertools.pairwise(chain):
            assert after.from_status == before.to_status != after.to_status
        assert chain[-1].to_status == record.recipient_status(address)
        assert all(t.latency_ms >= 0 for t in chain)


@given(st.data())
def test_first_sighting_wins_whatever_order_sightings_arrive(data: st.DataObject) -> None:
    events = data.draw(message_events(max_events=6))
    seen = data.draw(st.lists(st.integers(0, 10_000), min_size=2, max_size=4, unique=True))
    sightings = [(events, 1_700_000_000_000 + s) for s in seen]
    reference = _fold_seen(sightings)
    assert _fold_seen(data.draw(st.permutations(sightings))) == reference


def _fold_seen(sightings):
    from service import state
    from service.codec import encode_batch
    from tests.support.fold import events_of

    record = state.MessageRecord()
    for events, seen_ms in sightings:
        for write in encode_batch(list(events_of(events)), seen_ms):
            state.merge(record, write)
    return record
