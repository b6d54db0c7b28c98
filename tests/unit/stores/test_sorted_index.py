"""The memory store's sorted structures: held to a plain sorted list, and the
send-time keys held to the search order they stand for."""

from __future__ import annotations

from bisect import insort

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import search
from service.search import Position
from service.stores import sorted_index
from service.stores.memory_index import key_bound, message_key, position_key, position_of
from service.stores.sorted_index import SortedIndex

operations = st.lists(
    st.tuples(st.sampled_from(["add", "add", "add", "remove"]), st.integers(0, 60)),
    max_size=400,
)


# The patched block size is the same for every example: the fixture may be shared.
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=operations, bound=st.none() | st.integers(-1, 61), count=st.integers(0, 30))
def test_reads_and_writes_agree_with_a_sorted_list(operations, bound, count, monkeypatch) -> None:
    monkeypatch.setattr(sorted_index, "BLOCK", 4)  # many blocks, splits and empties
    index: SortedIndex[int, str] = SortedIndex()
    reference: list[tuple[int, str]] = []
    for n, (operation, key) in enumerate(operations):
        if operation == "add":
            index.add(key, f"v{n}")
            insort(reference, (key, f"v{n}"), key=lambda row: row[0])
        else:
            held = [row for row in reference if row[0] == key]
            assert index.remove(key, held[0][1] if held else "none") == bool(held)
            if held:
                reference.remove(held[0])
    assert len(index) == len(reference)
    below = [row for row in reference if bound is None or row[0] < bound]
    assert index.below(bound, count) == below[::-1][:count]
    upto = [row for row in reference if bound is None or row[0] <= bound]
    assert index.below(bound, count, inclusive=True) == upto[::-1][:count]
    assert index.lowest(count) == reference[:count]


def test_keys_arriving_in_reverse_order_stay_sorted() -> None:
    index: SortedIndex[int, int] = SortedIndex()
    for key in range(3_000, 0, -1):
        index.add(key, key)
    assert [key for key, _ in index.below(None, 5_000)] == list(range(3_000, 0, -1))


message_ids = st.text(min_size=1, max_size=70)
sent_times = st.integers(-(2**45), 2**45)


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(sent_times, message_ids), b=st.tuples(sent_times, message_ids))
def test_send_time_keys_sort_as_search_positions(a, b) -> None:
    pa = Position(a[0], search.message_handle(a[1]))
    pb = Position(b[0], search.message_handle(b[1]))
    ka, kb = position_key(pa.sent_at, pa.handle), position_key(pb.sent_at, pb.handle)
    assert (ka < kb) == (pa < pb) and (ka == kb) == (pa == pb)
    assert position_of(ka) == pa
    assert message_key(a[0], a[1]) == ka  # the merge's shortcut


@settings(max_examples=300, deadline=None)
@given(
    sent_at=st.integers(0, 3),
    message_id=message_ids,
    cursor_at=st.integers(0, 3),
    cursor_handle=st.text(max_size=20) | message_ids.map(search.message_handle),
)
def test_a_cursor_from_a_client_bounds_keys_as_it_bounds_positions(
    sent_at, message_id, cursor_at, cursor_handle
) -> None:
    """A cursor is the client's text: whatever its handle holds, a message sorts
    before it exactly when its key is under the cursor's bound."""
    position = Position(sent_at, search.message_handle(message_id))
    cursor = Position(cursor_at, cursor_handle)
    below = position_key(position.sent_at, position.handle) < key_bound(cursor)
    assert below == (position < cursor)
