"""Hypothesis strategies: random but realistic event sets for one message."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.support import ses

MESSAGE_ID = "0100018bprop-0000-0000-0000-000000000000-000000"
POOL = ("a@x.com", "b@gmail.com", "c@yahoo.com")
T = ses.SENT_AT

offsets = st.integers(min_value=-5_000, max_value=3_600_000)


@st.composite
def message_events(draw: st.DrawFn, max_events: int = 12) -> list[dict[str, Any]]:
    destination = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
    some = st.lists(
        st.sampled_from(destination), min_size=1, max_size=len(destination), unique=True
    )
    builders = st.one_of(
        st.just(lambda: ses.send(MESSAGE_ID, destination)),
        st.tuples(some, offsets).map(lambda a: lambda: ses.delivery(MESSAGE_ID, a[0], T + a[1])),
        st.tuples(some, offsets, st.sampled_from(["Permanent", "Transient", "Undetermined"])).map(
            lambda a: lambda: ses.bounce(MESSAGE_ID, a[0], T + a[1], a[2])
        ),
        st.tuples(some, offsets).map(lambda a: lambda: ses.complaint(MESSAGE_ID, a[0], T + a[1])),
        st.tuples(some, offsets).map(lambda a: lambda: ses.delay(MESSAGE_ID, a[0], T + a[1])),
        st.just(lambda: ses.reject(MESSAGE_ID, destination)),
        st.just(lambda: ses.rendering_failure(MESSAGE_ID, destination)),
        st.tuples(some, offsets).map(lambda a: lambda: ses.open_(MESSAGE_ID, a[0], T + a[1])),
        st.tuples(some, offsets).map(lambda a: lambda: ses.click(MESSAGE_ID, a[0], T + a[1])),
    )
    chosen = draw(st.lists(builders, min_size=1, max_size=max_events))
    events = [build() for build in chosen]
    for event in events:
        event["mail"]["destination"] = destination
    # Some outcomes arrive as SES notifications, whose mail object is sparser (no
    # tags); the merged header must not depend on which version came last.
    as_notification = draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    return [
        _notification(event) if flip and event["eventType"] in _NOTIFIED else event
        for event, flip in zip(events, as_notification, strict=True)
    ]


_NOTIFIED = {"Delivery": "delivery", "Bounce": "bounce", "Complaint": "complaint"}


def _notification(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["eventType"]
    mail = {k: v for k, v in event["mail"].items() if k not in ("tags", "commonHeaders")}
    return {"notificationType": kind, "mail": mail, _NOTIFIED[kind]: event[_NOTIFIED[kind]]}


@st.composite
def deliveries(draw: st.DrawFn, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The same events as a source might deliver them: reordered, repeated, batched."""
    shuffled = draw(st.permutations(events))
    repeats = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    stream = draw(st.permutations(shuffled + repeats))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    batches, start = [], 0
    for cut in [*cuts, len(stream)]:
        batches.append(stream[start:cut])
        start = cut
    return [b for b in batches if b]


CROWDED_ID = "0100018bcaps-0000-0000-0000-000000000000-000000"
ADDRESSES = [f"r{n:03d}@x.com" for n in range(130)]


@st.composite
def crowded_message(draw: st.DrawFn) -> list[dict]:
    """Events naming, between them, more recipients than a record keeps."""
    events = []
    for n in range(draw(st.integers(3, 8))):
        # Wide, overlapping ranges, so that together they pass the cap.
        start = draw(st.integers(0, len(ADDRESSES) - 30))
        named = ADDRESSES[start : start + draw(st.integers(30, 60))]
        named = draw(st.permutations(named))
        kind = draw(st.sampled_from(["send", "delivery", "bounce", "delay"]))
        if kind == "send":
            events.append(ses.send(CROWDED_ID, named))
        elif kind == "delivery":
            events.append(ses.delivery(CROWDED_ID, named, ses.SENT_AT + 1_000 + n))
        elif kind == "bounce":
            events.append(ses.bounce(CROWDED_ID, named, ses.SENT_AT + 2_000 + n))
        else:
            events.append(ses.delay(CROWDED_ID, named, ses.SENT_AT + 3_000 + n))
    return events
