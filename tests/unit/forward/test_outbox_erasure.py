"""Erasing a recipient from the in-process outbox, and the event rewrite it shares
with the Redis outbox and the sender."""

from __future__ import annotations

from service.codec import decode_event, encode_batch
from service.forward.items import Change, item
from service.forward.outbox import MemoryOutbox, entry_weight, event_without
from service.parser import parse_payload
from tests.support import ses

T = ses.SENT_AT
GONE = "gone@x.com"


def event_naming(*addresses: str, bounce: bool = False) -> bytes:
    """A stored event naming ``addresses`` (a bounce carries a report for each)."""
    record = (ses.bounce if bounce else ses.delivery)("ev", list(addresses), T + 5)
    [write] = encode_batch(parse_payload(ses.dumps(record)).events, T + 1_000)
    return write.events[0].blob


def change(message_id: str, address: str, event: bytes = b"") -> Change:
    return Change(message_id, address, -1, 1, T, 5, b"", event, "other")


def test_an_event_loses_the_address_and_keeps_the_rest() -> None:
    both = event_naming("keep@x.com", GONE, bounce=True)
    rewritten = decode_event(event_without(both, GONE))
    assert rewritten.recipients == ("keep@x.com",)
    assert [r["address"] for r in rewritten.details["reports"]] == ["keep@x.com"]
    assert event_without(event_naming(GONE), GONE) == b""  # named only it: no event
    other = event_naming("keep@x.com")
    assert event_without(other, GONE) is other
    assert event_without(b"", GONE) == b""


async def test_the_memory_outbox_rewrites_entries_in_place() -> None:
    outbox = MemoryOutbox()
    await outbox.prepare(["ahead", "behind"])
    both = event_naming(GONE, "keep@x.com")
    outbox.append([change("m-1", GONE, both), change("m-1", "keep@x.com", both)])
    outbox.append([change("m-2", "other@x.com", event_naming("other@x.com"))])
    outbox.append([change("m-3", GONE, event_naming(GONE))])
    [first] = await outbox.read("ahead", 1, 0)
    await outbox.ack("ahead", [first.id])
    held = outbox.bytes

    assert await outbox.erase_address(GONE) == 2
    assert await outbox.erase_address(GONE) == 0
    assert outbox.bytes < held
    assert outbox.bytes == sum(entry_weight(e.changes) for e in await outbox.read("behind", 9, 0))

    # "ahead" had the first entry: it goes on from its place, as before.
    ahead = await outbox.read("ahead", 9, 0)
    assert [[c.address for c in e.changes] for e in ahead] == [["other@x.com"], []]
    behind = await outbox.read("behind", 9, 0)
    assert [e.id for e in behind] == [first.id, *(e.id for e in ahead)]
    [kept] = behind[0].changes
    assert kept.address == "keep@x.com"
    assert decode_event(kept.event).recipients == ("keep@x.com",)
    # Its item keeps the id it had: the same entry, its place there.
    assert behind[0].place(0) == (first.id, 1)
    assert item(*behind[0].place(0), kept, _facts())["id"] == f"{first.id}.1"
    for entry in behind:
        for c in entry.changes:
            assert GONE not in c.address and GONE.encode() not in c.event
    assert outbox.lost == 0
    await outbox.ack("behind", [e.id for e in behind])
    await outbox.ack("ahead", [e.id for e in ahead])
    assert len(outbox) == 0 and outbox.bytes == 0


def _facts():
    from service.forward.items import Facts

    return Facts(None, "", {})
