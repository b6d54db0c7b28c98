"""Where the diagnosis travels besides the message view: forwarded items, alert
examples and their chat notices; and SES's tenth delay type in statistics and in
the simulator's traffic."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from service import state
from service.alerts.delivery import Deliverer
from service.alerts.engine import Alerting
from service.alerts.model import (
    Alert,
    AlertState,
    Example,
    Severity,
    alert_from_dict,
    alert_to_dict,
)
from service.alerts.payloads import slack
from service.alerts.rules import parse_rules
from service.alerts.store import MemoryAlertStore
from service.codec import decode_event, encode_batch
from service.diagnosis import CODES
from service.events import EventType
from service.forward.items import change_of, facts_of, item
from service.pipeline import Pipeline
from service.stores import MemoryStore
from service.traffic.model import TrafficModel
from tests.support import ses
from tests.support.clock import ManualClock
from tests.support.fold import SEEN_MS, events_of

T = ses.SENT_AT
A = "a@x.com"


# --- SendingDeferral ---------------------------------------------------------------


def test_a_sending_deferral_counts_as_its_own_delay_type() -> None:
    record = ses.delay("m", [A], T + 5_000)
    record["deliveryDelay"]["delayType"] = "SendingDeferral"
    [write] = encode_batch(list(events_of([record])), T + 10_000)
    assert "y:SendingDeferral" in write.events[0].once_fields
    assert "y:Undetermined" not in write.events[0].once_fields


def test_the_simulator_sends_sending_deferrals_among_its_delays() -> None:
    model = TrafficModel(random.Random(3))
    records = [r for n in range(2_000) for _, r in model.message(T + n)]
    types = {r["deliveryDelay"]["delayType"] for r in records if r["eventType"] == "DeliveryDelay"}
    assert "SendingDeferral" in types


# --- forwarded items ---------------------------------------------------------------


def forwarded(records: list[dict], kind: EventType, to_status: int, old: int | None) -> dict:
    [write] = encode_batch(list(events_of(records)), SEEN_MS)
    [cause] = [e for e in write.events if _type_of(e) is kind]
    change = change_of(write, cause, A, old, to_status, write.header)
    return item("1700000000000-0", 0, change, facts_of(change.header, {}))


def _type_of(event: state.EventWrite) -> EventType:
    return decode_event(event.blob).type


def test_a_forwarded_bounce_carries_its_code_and_summary_only() -> None:
    records = [ses.send("m", [A]), ses.bounce("m", [A], T + 2_500, subtype="NoEmail")]
    body = forwarded(records, EventType.BOUNCE, state.BOUNCED, state.SENT)
    assert body["to"] == "bounced"
    assert set(body["diagnosis"]) == {"code", "summary"}
    assert body["diagnosis"]["code"] == "bounce.permanent.no_email"
    assert "2.5 s after sending" in body["diagnosis"]["summary"]
    assert "“smtp; 550 5.1.1 user unknown”" in body["diagnosis"]["summary"]


def test_a_forwarded_delay_says_its_type_without_claiming_a_count() -> None:
    records = [ses.send("m", [A]), ses.delay("m", [A], T + 60_000)]
    body = forwarded(records, EventType.DELIVERY_DELAY, state.DELAYED, state.SENT)
    assert body["diagnosis"]["code"] == "delay.transient_communication_failure"
    assert body["diagnosis"]["summary"].startswith("SES delayed this message 1 min after sending")


def test_a_forwarded_delivery_and_a_new_recipient_have_their_codes() -> None:
    records = [ses.send("m", [A]), ses.delivery("m", [A], T + 900)]
    delivered = forwarded(records, EventType.DELIVERY, state.DELIVERED, state.SENT)
    assert delivered["diagnosis"]["code"] == "delivered"
    sent = forwarded([ses.send("m", [A])], EventType.SEND, state.SENT, None)
    assert sent["from"] is None and sent["diagnosis"]["code"] == "pending"
    assert {delivered["diagnosis"]["code"], sent["diagnosis"]["code"]} <= CODES


# --- alert examples ----------------------------------------------------------------

RULES = """
timing: {group_wait_s: 0, group_interval_s: 300, repeat_interval_s: 3600}
rules:
  - {name: bounces, kind: status_count, status: bounced, min_count: 1}
  - {name: overdue, kind: overdue}
"""


async def alerting_over(records: list[dict], now_ms: int, tmp_path: Path) -> list[Alert]:
    clock = ManualClock(T)
    store = MemoryStore()
    await Pipeline(store, clock_ms=clock).ingest(ses.dumps(*records), "test")
    clock.ms = now_ms
    alerting = Alerting(
        store,
        MemoryAlertStore(tmp_path / "alerts"),
        parse_rules(RULES),
        [],
        Deliverer(httpx.AsyncClient(), secret=b"0123456789abcdef"),
        overdue_after_s=900,
        clock_ms=clock,
    )
    try:
        return await alerting.tick()
    finally:
        await alerting.stop()


async def test_a_bounce_alert_example_carries_the_recipients_diagnosis(tmp_path: Path) -> None:
    records = [ses.send("m", [A]), ses.bounce("m", [A], T + 2_000)]
    [fired] = await alerting_over(records, T + 10_000, tmp_path)
    [example] = fired.examples
    assert (example.message_id, example.recipient) == ("m", A)
    assert example.diagnosis is not None
    assert example.diagnosis["code"] == "bounce.permanent.general"
    assert set(example.diagnosis) == {"code", "summary"}
    # Kept and listed as it was sent (outbox, history, GET /v1/alerts).
    assert alert_from_dict(alert_to_dict(fired)) == fired
    assert alert_to_dict(fired)["examples"][0]["diagnosis"] == example.diagnosis


async def test_overdue_examples_carry_pending_overdue_or_their_delay(tmp_path: Path) -> None:
    b = "b@y.com"
    records = [
        ses.send("quiet", [A]),
        ses.send("slow", [b]),
        ses.delay("slow", [b], T + 60_000),
    ]
    [fired] = await alerting_over(records, T + 1_000_000, tmp_path)
    codes = {e.recipient: (e.diagnosis or {}).get("code") for e in fired.examples}
    assert codes == {A: "pending.overdue", b: "delay.transient_communication_failure"}


def test_a_chat_notice_shows_the_example_diagnosis_as_text() -> None:
    alert = Alert(
        key="bounces",
        rule="bounces",
        severity=Severity.CRITICAL,
        state=AlertState.FIRING,
        title="1 recipient bounced",
        summary="One bounce.",
        started_at=T,
        examples=(
            Example(
                "m",
                A,
                "bounced",
                {"code": "bounce.permanent.no_email", "summary": "<!channel> no such user"},
            ),
        ),
    )
    body = slack(alert)
    fields = [f["text"] for block in body["blocks"] for f in block.get("fields", [])]
    [example] = [f for f in fields if f.startswith("example")]
    assert "[bounce.permanent.no_email] <!channel> no such user" in example
    assert all(f["type"] == "plain_text" for b in body["blocks"] for f in b.get("fields", []))
