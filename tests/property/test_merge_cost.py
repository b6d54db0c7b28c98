"""No merge call exceeds its budget for any parsed input, and cutting a message into
parts changes nothing it ends in (service.stores.redis.merge_cost)."""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service import state
from service.codec import encode_batch
from service.dimensions import MAX_TAG_DIMENSIONS, Dimensions
from service.parser import MAX_RECIPIENTS, parse_payload
from service.stores.redis import merge_cost
from tests.support import ses
from tests.support.strategies import crowded_message

TAGS = tuple(f"t{n}" for n in range(MAX_TAG_DIMENSIONS))
DIMENSIONS = Dimensions(tags=TAGS)


def parsed_writes(records: list[dict]) -> list[state.MessageWrite]:
    result = parse_payload(b"\n".join(orjson.dumps(r) for r in records))
    return encode_batch(result.events, ses.SENT_AT + 60_000, DIMENSIONS)


def tagged(record: dict) -> dict:
    record["mail"]["tags"].update({tag: [f"v-{tag}"] for tag in TAGS})
    return record


@st.composite
def hostile_batches(draw: st.DrawFn) -> list[dict]:
    """Wide events (past the per-event cap), many to one message or each its own."""
    records = []
    one_message = draw(st.booleans())
    for n in range(draw(st.integers(1, 60))):
        width = draw(st.integers(1, 3 * MAX_RECIPIENTS))
        start = draw(st.integers(0, 500))
        named = [f"r{start + k:05d}@d{k % 9}.example" for k in range(width)]
        message_id = "wide" if one_message else f"wide-{n}"
        kind = draw(st.sampled_from(["send", "delivery", "bounce", "delay"]))
        at = ses.SENT_AT + 1_000 + n
        if kind == "send":
            record = ses.send(message_id, named)
        else:
            builder = {"delivery": ses.delivery, "bounce": ses.bounce, "delay": ses.delay}[kind]
            record = builder(message_id, named, at)
        records.append(tagged(record))
    return records


def test_the_widest_event_the_parser_lets_through_fits_a_call() -> None:
    named = [f"r{k:05d}@d{k}.example" for k in range(3 * MAX_RECIPIENTS)]
    writes = parsed_writes([tagged(ses.delivery("w", named, ses.SENT_AT + 5))])
    (event,) = writes[0].events
    assert len(event.recipient_bits) == MAX_RECIPIENTS and writes[0].truncated
    assert merge_cost.write_cost(writes[0]) <= merge_cost.DEFAULT_BUDGET // 2


@settings(max_examples=60, deadline=None)
@given(hostile_batches(), st.sampled_from([merge_cost.DEFAULT_BUDGET, 6_000]))
def test_no_call_exceeds_its_budget_for_any_parsed_input(records: list[dict], budget: int) -> None:
    writes = parsed_writes(records)
    calls = merge_cost.cut(writes, budget)
    for call in calls:
        assert sum(map(merge_cost.write_cost, call.writes)) <= budget
        assert call.cost == sum(map(merge_cost.write_cost, call.writes))
    # Every event goes exactly once, in order, each message's parts in a row.
    flat = [(w.message_id, e) for call in calls for w in call.writes for e in w.events]
    assert flat == [(w.message_id, e) for w in writes for e in w.events]


@settings(max_examples=60, deadline=None)
@given(crowded_message(), st.integers(400, 3_000))
def test_a_message_cut_in_parts_ends_as_the_whole_does(records: list[dict], budget: int) -> None:
    (write,) = parsed_writes(records)
    whole = state.MessageRecord()
    whole_transitions = state.merge(whole, write)
    parts = merge_cost.split(write, budget)
    in_parts = state.MessageRecord()
    part_transitions = [t for part in parts for t in state.merge(in_parts, part)]
    assert in_parts == whole
    assert Counter(part_transitions) == Counter(whole_transitions)
