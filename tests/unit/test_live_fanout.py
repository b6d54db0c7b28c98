"""Live fan-out: the merge path only queues; the flush matches by index, not per filter."""

from __future__ import annotations

import random
from typing import Any

import orjson

from api.live import MAX_PENDING, Broadcaster, FilterIndex, LiveClient, LiveFilter
from service.dimensions import domain_of
from service.state import STATUSES, Transition


async def no_stats() -> dict[str, Any]:
    return {}


def transition(n: int, status: str = "delivered") -> Transition:
    return Transition(f"m-{n}", f"user{n}@d{n % 7}.example", "sent", status, 1_700_000_000_000, 5)


def naive_matches(live_filter: LiveFilter, t: Transition) -> bool:
    """The filter semantics, spelled out field by field (what every client relies on)."""
    return (
        (live_filter.message_id is None or t.message_id == live_filter.message_id)
        and (live_filter.recipient is None or t.recipient == live_filter.recipient)
        and (live_filter.domain is None or domain_of(t.recipient) == live_filter.domain)
        and (live_filter.status is None or t.to_status == live_filter.status)
    )


def joined(broadcaster: Broadcaster, filters: list[LiveFilter]) -> dict[LiveFilter, LiveClient]:
    clients = {}
    for live_filter in filters:
        client = LiveClient(websocket=None, queue_frames=8)  # type: ignore[arg-type]
        broadcaster._join(client, live_filter)
        clients[live_filter] = client
    return clients


async def test_five_thousand_filters_cost_no_per_filter_work_on_merge_or_flush() -> None:
    broadcaster = Broadcaster(no_stats, max_clients=10_000)
    filters = [LiveFilter(message_id=f"m-{n}") for n in range(5_000)]
    clients = joined(broadcaster, filters)
    transitions = [transition(n) for n in range(0, 10_000, 100)]  # 100: half match a filter

    broadcaster.publish(transitions)
    # The merge path only queued: nothing matched yet.
    assert broadcaster.index.lookups == 0
    broadcaster.flush()
    # One lookup per transition (one filter shape in use), not one per filter.
    assert broadcaster.index.lookups == len(transitions)
    got = {f.message_id: c.queue.qsize() for f, c in clients.items() if not c.queue.empty()}
    assert got == {f"m-{n}": 1 for n in range(0, 5_000, 100)}
    frame = orjson.loads(clients[LiveFilter(message_id="m-4900")].queue.get_nowait())
    assert [item["message_id"] for item in frame["items"]] == ["m-4900"]


async def test_the_index_matches_exactly_what_the_filters_say() -> None:
    rng = random.Random(23)
    statuses = sorted(STATUSES)

    def maybe(value: str) -> str | None:
        return value if rng.random() < 0.5 else None

    filters = {
        LiveFilter(
            message_id=maybe(f"m-{rng.randrange(40)}"),
            recipient=maybe(f"user{rng.randrange(40)}@d{rng.randrange(7)}.example"),
            domain=maybe(f"d{rng.randrange(8)}.example"),
            status=maybe(rng.choice(statuses)),
        )
        for _ in range(400)
    }
    index = FilterIndex()
    for live_filter in filters:
        index.add(live_filter)
    transitions = [transition(rng.randrange(40), rng.choice(statuses)) for _ in range(300)]
    matched = index.match(transitions)
    expected = {f: [t.message_id for t in transitions if naive_matches(f, t)] for f in filters}
    assert {f: [i["message_id"] for i in items] for f, items in matched.items()} == {
        f: ids for f, ids in expected.items() if ids
    }
    assert index.lookups <= 16 * len(transitions)
    for live_filter in filters:
        index.remove(live_filter)
    assert len(index) == 0 and index.match(transitions) == {}


async def test_pending_transitions_are_bounded_and_the_excess_counted() -> None:
    broadcaster = Broadcaster(no_stats)
    joined(broadcaster, [LiveFilter()])
    broadcaster.publish([transition(n) for n in range(MAX_PENDING + 10)])
    assert len(broadcaster._pending) == MAX_PENDING
    assert broadcaster.dropped_transitions == 10


async def test_nothing_is_queued_while_nobody_watches() -> None:
    broadcaster = Broadcaster(no_stats)
    broadcaster.publish([transition(1)])
    assert broadcaster._pending == []
