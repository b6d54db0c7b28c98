"""WebSocket /v1/live over a real uvicorn, with real websocket clients."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets

from service.clock import wall_clock_ms
from service.settings import Settings
from tests.support import ses
from tests.support.redis import RedisTarget
from tests.support.serving import serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = ses.SENT_AT


async def frames(ws: Any, kind: str, until: Any, within_s: float = 5.0) -> list[dict]:
    """Frames of ``kind`` received until ``until(frames)`` holds."""
    found: list[dict] = []
    async with asyncio.timeout(within_s):
        while not until(found):
            frame = orjson.loads(await ws.recv())
            if frame["type"] == kind:
                found.append(frame)
    return found


def items_of(found: list[dict]) -> list[dict]:
    return [item for frame in found for item in frame["items"]]


async def test_transitions_reach_each_client_by_its_filters() -> None:
    async with (
        serving(Settings(_env_file=None)) as server,
        websockets.connect(f"{server.ws}/v1/live") as everyone,
        websockets.connect(f"{server.ws}/v1/live?domain=gmail.com") as gmail,
        websockets.connect(f"{server.ws}/v1/live?message_id=live-2&status=bounced") as bounces,
    ):
        await asyncio.sleep(0.1)
        body = ses.dumps(
            ses.send("live-1", ["a@gmail.com", "b@yahoo.com"]),
            ses.delivery("live-1", ["a@gmail.com"], T + 1_000),
            ses.send("live-2", ["c@yahoo.com"]),
            ses.bounce("live-2", ["c@yahoo.com"], T + 2_000),
        )
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{server.base}/v1/events", content=body)).status_code == 202
        everything = items_of(
            await frames(everyone, "transitions", lambda f: len(items_of(f)) >= 5)
        )
        assert {(i["message_id"], i["recipient"], i["to"]) for i in everything} == {
            ("live-1", "a@gmail.com", "sent"),
            ("live-1", "a@gmail.com", "delivered"),
            ("live-1", "b@yahoo.com", "sent"),
            ("live-2", "c@yahoo.com", "sent"),
            ("live-2", "c@yahoo.com", "bounced"),
        }
        delivered = next(i for i in everything if i["to"] == "delivered")
        assert delivered["from"] == "sent" and delivered["latency_ms"] == 1_000
        assert delivered["at"] == "2023-11-14T22:13:21.000Z"
        only_gmail = items_of(await frames(gmail, "transitions", lambda f: len(items_of(f)) >= 2))
        assert {i["recipient"] for i in only_gmail} == {"a@gmail.com"}
        only_bounce = items_of(await frames(bounces, "transitions", lambda f: len(f) >= 1))
        assert [(i["message_id"], i["to"]) for i in only_bounce] == [("live-2", "bounced")]


async def test_transition_frames_are_batched_and_stats_come_every_second() -> None:
    async with (
        serving(Settings(_env_file=None)) as server,
        websockets.connect(f"{server.ws}/v1/live") as ws,
    ):

        async def post_many() -> None:
            async with httpx.AsyncClient() as http:
                for n in range(20):
                    await http.post(
                        f"{server.base}/v1/events",
                        content=ses.dumps(ses.send(f"b-{n}", ["a@x.com"], wall_clock_ms())),
                    )
                    await asyncio.sleep(0.01)

        poster = asyncio.create_task(post_many())
        arrivals: list[float] = []
        stats: list[dict] = []
        started = time.monotonic()
        async with asyncio.timeout(10):
            while time.monotonic() - started < 2.6:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "transitions":
                    arrivals.append(time.monotonic())
                else:
                    stats.append(frame)
        await poster
        # 20 messages posted 10 ms apart came as fewer frames, >= ~50 ms apart.
        assert 1 <= len(arrivals) < 20
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert all(gap >= 0.035 for gap in gaps), gaps
        assert 2 <= len(stats) <= 3
        assert stats[-1]["counts"]["sent"] == 20 and stats[-1]["window_s"] == 300


async def test_the_api_token_guards_the_websocket() -> None:
    async with serving(Settings(_env_file=None, api_token="live-secret")) as server:
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{server.ws}/v1/live"):
                pass
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{server.ws}/v1/live?token=wrong"):
                pass
        async with websockets.connect(f"{server.ws}/v1/live?token=live-secret") as ws:
            await frames(ws, "stats", lambda f: len(f) >= 1)
        headers = {"Authorization": "Bearer live-secret"}
        async with websockets.connect(f"{server.ws}/v1/live", additional_headers=headers) as ws:
            await frames(ws, "stats", lambda f: len(f) >= 1)


async def test_pages_of_other_origins_cannot_open_the_feed() -> None:
    settings = Settings(_env_file=None, allowed_origins="https://ops.example")
    async with serving(settings) as server:
        host = server.ws.removeprefix("ws://")
        for origin in ("https://evil.example", f"http://{host}.evil.example", "null"):
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with websockets.connect(f"{server.ws}/v1/live", origin=origin):
                    pass
        for origin in (f"http://{host}", "https://ops.example", None):
            async with websockets.connect(f"{server.ws}/v1/live", origin=origin) as ws:
                await frames(ws, "stats", lambda f: len(f) >= 1)


# ~12 MB of frames: well past what loopback socket buffers (up to 4 MB here) absorb.
BATCHES = 60


def stalled_client(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads.

    Client libraries keep draining the socket into memory whatever their queue
    settings, so a truly stalled reader is written by hand.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: read the handshake and nothing more
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_a_slow_client_is_dropped_without_stalling_others_or_ingestion() -> None:
    settings = Settings(_env_file=None, live_queue_frames=2, live_send_timeout_s=0.5)
    async with serving(settings) as server:
        port = int(server.base.rsplit(":", 1)[1])
        slow = await asyncio.to_thread(stalled_client, port)
        async with websockets.connect(f"{server.ws}/v1/live", max_size=None) as fast:
            received = 0

            async def read_fast() -> None:
                nonlocal received
                while True:
                    frame = orjson.loads(await fast.recv())
                    if frame["type"] == "transitions":
                        received += len(frame["items"])

            reader = asyncio.create_task(read_fast())
            slowest_post = 0.0
            async with httpx.AsyncClient(timeout=10) as http:
                for batch in range(BATCHES):
                    records = [ses.send(f"s-{batch}-{n}", [f"user{n}@x.com"]) for n in range(1_500)]
                    started = time.monotonic()
                    response = await http.post(
                        f"{server.base}/v1/events", content=ses.dumps(*records)
                    )
                    slowest_post = max(slowest_post, time.monotonic() - started)
                    assert response.status_code == 202
            async with asyncio.timeout(15):
                while received < BATCHES * 1_500:  # noqa: ASYNC110 - the reader task counts
                    await asyncio.sleep(0.05)
            reader.cancel()
            assert server.runtime.live.dropped_slow >= 1
            assert server.runtime.live.clients == 1  # only the fast one is left
            assert slowest_post < 2.0, slowest_post
        slow.close()


async def test_a_replica_streams_transitions_merged_by_another(redis_target: RedisTarget) -> None:
    await redis_target.flush()
    settings = Settings(_env_file=None, cache_ttl_s=0, **redis_target.settings())
    async with (
        serving(settings) as replica_a,
        serving(settings) as replica_b,
        websockets.connect(f"{replica_a.ws}/v1/live?message_id=x-1") as ws,
    ):
        await asyncio.sleep(0.3)
        body = ses.dumps(ses.send("x-1", ["a@x.com"]), ses.delivery("x-1", ["a@x.com"], T + 5))
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{replica_b.base}/v1/events", content=body)).status_code == 202
        seen = items_of(await frames(ws, "transitions", lambda f: len(items_of(f)) >= 2))
        assert [(i["from"], i["to"]) for i in seen] == [(None, "sent"), ("sent", "delivered")]


async def closed_with(ws: Any) -> int | None:
    """The close code the server sent right after the handshake, or None if it did not."""
    try:
        async with asyncio.timeout(3):
            while True:
                await ws.recv()
    except websockets.exceptions.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return None


async def test_the_feed_refuses_clients_past_its_caps_in_all_and_per_address() -> None:
    async with serving(Settings(_env_file=None)) as server:
        server.runtime.live.max_clients = 3
        server.runtime.live.max_per_address = 1
        url = f"{server.ws}/v1/live"

        def connect(address: str) -> Any:
            return websockets.connect(url, local_addr=(address, 0), open_timeout=5)

        async with connect("127.0.0.1") as first, connect("127.0.0.2"), connect("127.0.0.3"):
            await frames(first, "stats", lambda f: len(f) >= 1)
            async with connect("127.0.0.1") as same_address:
                assert await closed_with(same_address) == 1008  # its own cap
            async with connect("127.0.0.4") as one_too_many:
                assert await closed_with(one_too_many) == 1013  # try again later
            assert server.runtime.live.clients == 3
            assert dict(server.runtime.live.refused) == {"per_address": 1, "total": 1}
        # Leaving frees the places.
        async with asyncio.timeout(5):
            while server.runtime.live.clients:  # noqa: ASYNC110 - the server counts
                await asyncio.sleep(0.02)
        async with connect("127.0.0.1") as back, connect("127.0.0.4") as fourth:
            await frames(back, "stats", lambda f: len(f) >= 1)
            await frames(fourth, "stats", lambda f: len(f) >= 1)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{server.admin}/metrics")).text
        assert 'ses_tracker_websocket_refused_total{cap="total"} 1.0' in metrics
