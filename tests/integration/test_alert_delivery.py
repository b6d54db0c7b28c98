"""Alerts posted over real HTTP to a local receiver standing in for each chat service."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from service.alerts.delivery import Deliverer, FinalDeliveryError, RetryableDeliveryError
from service.alerts.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_webhooks, verify
from tests.support.chat import CHECKS, sample_alert
from tests.support.hostile import HostileReceiver
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


async def test_test_alert_posts_to_every_sink_and_says_how_each_went() -> None:
    """`ses-tracker test-alert`: one post per sink, each checked by its service's rules."""

    from tests.support.process import clean_environment, command
    from tests.support.servers import free_port

    async with Receiver(check_by_path) as receiver:
        dead = f"http://127.0.0.1:{free_port()}/nothing-listens"
        env = clean_environment()
        env["SES_TRACKER_ALERT_WEBHOOKS"] = (
            f"slack={receiver.base}/slack,discord={receiver.base}/discord,teams={dead}"
        )
        process = await asyncio.create_subprocess_exec(
            *command(), "test-alert", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    lines = out.decode().splitlines()
    assert process.returncode == 1  # one sink failed
    assert [line.split(":")[0] for line in lines] == ["slack", "discord", "teams"]
    assert lines[0].endswith(": delivered") and lines[1].endswith(": delivered")
    assert ": FAILED: " in lines[2]
    assert "nothing-listens" not in out.decode()  # the URL is a credential
    assert len(receiver.received) == 2 and receiver.refusals == []


async def test_a_sink_replying_a_gibibyte_or_dripping_costs_little_and_ends_at_the_deadline() -> (
    None
):
    """#26: alerts post through the same bounded helper as forwarding."""
    async with HostileReceiver("flood") as flood, httpx.AsyncClient() as client:
        (sink,) = parse_webhooks(f"webhook={flood.base}/hook")
        started = time.monotonic()
        await Deliverer(client, **FAST).send(sink, ALERT)
        assert time.monotonic() - started < 2.0
        assert flood.requests == 1 and flood.sent_bytes < 64 << 20
    async with HostileReceiver("drip") as drip, httpx.AsyncClient() as client:
        (sink,) = parse_webhooks(f"webhook={drip.base}/hook")
        started = time.monotonic()
        with pytest.raises(RetryableDeliveryError, match=r"no answer within 0\.4 s"):
            await Deliverer(client, attempts=2, deadline_s=0.4, **FAST).send(sink, ALERT)
        # Two attempts, each cut off at its deadline, though the drip never paused long
        # enough for a per-read timeout.
        assert 0.8 <= time.monotonic() - started < 2.0
        assert drip.requests == 2
