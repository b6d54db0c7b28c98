"""Alerts posted over real HTTP to a local receiver standing in for each chat service."""

from __future__ import annotations

import time

import httpx
import pytest

from service.alerts.delivery import Deliverer, FinalDeliveryError, RetryableDeliveryError
from service.alerts.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_webhooks, verify
from tests.support.chat import CHECKS, sample_alert
from tests.support.receiver import Answer, Received, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ALERT = sample_alert()
# Fast backoff and no pacing, unless a test is about them.
FAST = {"backoff_s": 0.05, "max_wait_s": 5.0, "min_interval_s": {}}


def check_by_path(request: Received) -> None:
    CHECKS[request.path.strip("/")](request.json())


@pytest.mark.parametrize("kind", sorted(CHECKS))
async def test_each_chat_service_accepts_its_payload(kind: str) -> None:
    async with Receiver(check_by_path) as receiver, httpx.AsyncClient() as client:
        (sink,) = parse_webhooks(f"{kind}={receiver.base}/{kind}")
        await Deliverer(client, **FAST).send(sink, ALERT)
        assert len(receiver.received) == 1 and receiver.refusals == []


async def test_500_then_429_then_200_delivers_once_honouring_retry_after() -> None:
    async with Receiver(check_by_path) as receiver, httpx.AsyncClient() as client:
        receiver.script = [Answer(500), Answer(429, {"Retry-After": "1"}), Answer(200)]
        (sink,) = parse_webhooks(f"slack={receiver.base}/slack")
        await Deliverer(client, **FAST).send(sink, ALERT)
        first, second, third = receiver.received
        assert third.at - second.at >= 1.0  # Retry-After: 1, although backoff is 50 ms
        assert second.at - first.at < 1.0
        assert first.body == second.body == third.body


async def test_a_refused_payload_is_not_retried() -> None:
    async with Receiver() as receiver, httpx.AsyncClient() as client:
        receiver.script = [Answer(400)]
        (sink,) = parse_webhooks(f"discord={receiver.base}/discord")
        with pytest.raises(FinalDeliveryError, match="HTTP 400"):
            await Deliverer(client, **FAST).send(sink, ALERT)
        assert len(receiver.received) == 1


async def test_gives_up_after_the_attempts_allowed() -> None:
    async with Receiver() as receiver, httpx.AsyncClient() as client:
        receiver.script = [Answer(503)] * 3
        (sink,) = parse_webhooks(f"teams={receiver.base}/teams")
        with pytest.raises(RetryableDeliveryError):
            await Deliverer(client, attempts=3, **FAST).send(sink, ALERT)
        assert len(receiver.received) == 3


async def test_a_hung_receiver_times_out_and_is_retried() -> None:
    async with Receiver(check_by_path) as receiver:
        receiver.script = [Answer(200, hang_s=3)]
        async with httpx.AsyncClient(timeout=0.5) as client:
            (sink,) = parse_webhooks(f"googlechat={receiver.base}/googlechat")
            started = time.monotonic()
            await Deliverer(client, **FAST).send(sink, ALERT)
        assert time.monotonic() - started < 2.5
        assert len(receiver.received) == 2


async def test_posts_to_one_sink_are_paced() -> None:
    async with Receiver(check_by_path) as receiver, httpx.AsyncClient() as client:
        (sink,) = parse_webhooks(f"slack={receiver.base}/slack")
        deliverer = Deliverer(client, **{**FAST, "min_interval_s": {"slack": 0.3}})
        for _ in range(3):
            await deliverer.send(sink, ALERT)
        gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
        assert all(gap >= 0.29 for gap in gaps), gaps


async def test_two_webhooks_on_one_host_are_paced_apart() -> None:
    async with Receiver() as receiver, httpx.AsyncClient() as client:
        sinks = parse_webhooks(f"slack={receiver.base}/alerts,slack={receiver.base}/ops")
        deliverer = Deliverer(client, **{**FAST, "min_interval_s": {"slack": 2.0}})
        for sink in sinks:
            await deliverer.send(sink, ALERT)
        first, second = receiver.received
        assert {first.path, second.path} == {"/alerts", "/ops"}
        assert second.at - first.at < 1.0  # the second did not wait for the first's slot


async def test_generic_webhook_is_signed() -> None:
    secret = b"webhook-secret"

    def check(request: Received) -> None:
        timestamp = int(request.headers[TIMESTAMP_HEADER.lower()])
        signature = request.headers[SIGNATURE_HEADER.lower()]
        assert verify(secret, timestamp, request.body, signature, int(time.time()))
        assert request.json()["key"] == ALERT.key

    async with Receiver(check) as receiver, httpx.AsyncClient() as client:
        (sink,) = parse_webhooks(f"webhook={receiver.base}/hook")
        await Deliverer(client, secret=secret, **FAST).send(sink, ALERT)
        assert receiver.refusals == [] and len(receiver.received) == 1
