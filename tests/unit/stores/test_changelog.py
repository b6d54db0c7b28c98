"""The change log's counting (pure): entries tallied and replayed count what the
memory store's merge counts, event by event, whatever order the batches came in."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from service import state, stats
from service.codec import encode_batch
from service.dimensions import Dimensions, domain_of
from service.stores.redis import changelog, layout
from tests.support import ses
from tests.support.fold import SEEN_MS, events_of
from tests.support.strategies import deliveries, message_events

COUNTING = stats.Counting(SEEN_MS)
DIMENSIONS = Dimensions(tags=("team",))
NEW = layout.CODES["NEW_RECIPIENT"]


class _Recorder:
    """What merge.lua puts in an entry, from state.merge: the events new to the store
    and the transitions, in the merge's order, both counted into ``changes`` too."""

    def __init__(self, changes: stats.Changes) -> None:
        self.changes = changes
        self.applied: list[int] = []
        self.reply: list = []
        self.message = 0

    def once(self, write: state.MessageWrite, event: state.EventWrite) -> None:
        self.applied += [self.message, write.events.index(event) + 1]
        self.changes.once(write, event)

    def transition(self, write, event, address, old, new) -> None:
        index = 0 if event is None else write.events.index(event) + 1
        # The log names the recipient's domain (merge.lua), not the address.
        self.reply += [self.message, index, domain_of(address), NEW if old is None else old, new]
        self.changes.transition(write, event, address, old, new)

    def unsafe(self, write, event, address, gained) -> None:
        pass


def merge_with_log(batches: list[list[dict]]) -> tuple[list[dict], dict, dict]:
    """Each batch merged as a store would; the entries its merges append, and the
    live buckets and rollups the memory store's own counting gives."""
    records: dict[str, state.MessageRecord] = {}
    live: dict = {}
    rollups: dict = {}
    entries = []
    for batch in batches:
        writes = encode_batch(list(events_of(batch)), SEEN_MS, DIMENSIONS)
        recorder = _Recorder(stats.Changes(COUNTING, live, rollups))
        for number, write in enumerate(writes, 1):
            recorder.message = number
            state.merge(
                records.setdefault(write.message_id, state.MessageRecord()), write, recorder
            )
        if recorder.applied or recorder.reply:
            entries.append(
                {
                    changelog.CONTEXT: changelog.pack_context(writes, COUNTING),
                    changelog.TRANSITIONS: msgpack.packb(recorder.reply),
                    changelog.APPLIED: msgpack.packb(recorder.applied),
                }
            )
    return entries, live, rollups


def figures(counters) -> dict:
    # Not the admission bookkeeping (a:, n:) a rollup keeps among its fields: the
    # projection admits in its atomic step (project.lua), against what is stored.
    return {k: v for k, v in counters.items() if v and k[:2] not in ("a:", "n:")}


def replayed(entries: list[dict]) -> tuple[dict, dict]:
    counted = changelog.count_entries(entries)
    live = {bucket: counters.fields() for bucket, counters in counted.live.items()}
    return live, {key: figures(counters) for key, counters in counted.rollups.items()}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_log_counts_what_the_merge_counted(data: st.DataObject) -> None:
    batches = data.draw(deliveries(data.draw(message_events())))
    entries, live, rollups = merge_with_log(batches)
    got_live, got_rollups = replayed(entries)
    assert got_live == {bucket: counters.fields() for bucket, counters in live.items()}
    assert got_rollups == {key: figures(counters) for key, counters in rollups.items()}


def test_alike_changes_are_counted_once_with_their_multiplicity() -> None:
    sends = [ses.send(f"alike-{n}", [f"r{n}@gmail.com"]) for n in range(200)]
    entries, live, _ = merge_with_log([sends])
    [bucket] = live
    got, _ = replayed(entries)
    assert got[bucket]["c:sent"] == 200 == live[bucket].fields()["c:sent"]
    assert got[bucket]["g:provider=gmail|c:sent"] == 200


def test_groups_meet_admission_in_the_order_they_were_first_counted() -> None:
    sends = [ses.send(f"order-{n}", [f"r@d{n}.example"]) for n in range(5)]
    entries, _, _ = merge_with_log([sends])
    counted = changelog.count_entries(entries)
    [admission] = counted.admissions.values()
    domains = [g for g in changelog.admission_order(admission) if g.startswith("domain=")]
    assert domains == [f"domain=d{n}.example" for n in range(5)]


def test_an_entry_that_cannot_be_read_is_passed_over_and_counted() -> None:
    entries, live, _ = merge_with_log([[ses.send("fine", ["a@x.com"])]])
    broken = {changelog.CONTEXT: b"\xc1", changelog.TRANSITIONS: b"", changelog.APPLIED: b""}
    counted = changelog.count_entries([broken, *entries])
    assert counted.skipped == 1 and counted.entries == 2
    assert {b: c.fields() for b, c in counted.live.items()} == {
        b: c.fields() for b, c in live.items()
    }
