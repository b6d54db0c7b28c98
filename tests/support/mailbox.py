"""Random mailboxes for search tests: many messages, shared recipients, tied send times."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.support import ses

T = ses.SENT_AT
RECIPIENTS = ("a@x.com", "A@X.com", "b@y.org", "c@y.org", "d@z.net")
OUTCOMES = ("none", "delay", "delivery", "bounce", "soft_bounce", "complaint")


@st.composite
def mailbox(draw: st.DrawFn, max_messages: int = 14) -> list[list[dict[str, Any]]]:
    """Batches of SES records for up to ``max_messages`` messages.

    Send times come from a few seconds' worth of milliseconds so that ties (several
    messages sent in one millisecond) are common: they are what cursors get wrong.
    """
    count = draw(st.integers(1, max_messages))
    batches: list[list[dict[str, Any]]] = []
    for n in range(count):
        message_id = f"0100018bsearch-{n:04d}-0000-0000-000000000000-000000"
        sent_at = T + draw(st.sampled_from((0, 0, 1, 1000, 2000, 2000, 60_000, 120_500)))
        recipients = draw(
            st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True)
        )
        records = [ses.send(message_id, recipients, sent_at)]
        if draw(st.integers(0, 9)) == 0:
            records.append(ses.reject(message_id, recipients, sent_at))
        for address in recipients:
            outcome = draw(st.sampled_from(OUTCOMES))
            at = sent_at + 500
            if outcome == "delay":
                records.append(ses.delay(message_id, [address], at, sent_at))
            elif outcome == "delivery":
                records.append(ses.delivery(message_id, [address], at, sent_at))
            elif outcome == "bounce":
                records.append(ses.bounce(message_id, [address], at, sent_at=sent_at))
            elif outcome == "soft_bounce":
                records.append(ses.bounce(message_id, [address], at, "Transient", sent_at))
            elif outcome == "complaint":
                records.append(ses.delivery(message_id, [address], at, sent_at))
                records.append(ses.complaint(message_id, [address], at + 100, sent_at))
        # Outcomes may come in a later batch than the send, as they do in life.
        split = draw(st.integers(1, len(records)))
        batches.append(records[:split])
        if records[split:]:
            batches.append(records[split:])
    return draw(st.permutations(batches))


@st.composite
def queries(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "recipient": draw(st.none() | st.sampled_from((*RECIPIENTS, "B@Y.ORG", "nobody@x.com"))),
        "status": draw(
            st.none()
            | st.sampled_from(("sent", "delayed", "delivered", "bounced", "complained", "rejected"))
        ),
        "since_ms": draw(st.none() | st.sampled_from((T, T + 1, T + 2000, T + 60_000))),
        "until_ms": draw(st.none() | st.sampled_from((T + 1, T + 2000, T + 120_500, T + 10**7))),
        "limit": draw(st.integers(1, 4)),
        "waiting": draw(st.booleans()),
    }
