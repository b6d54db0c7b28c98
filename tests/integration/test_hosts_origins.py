"""A browser cannot be turned against the service (issue #26 point 1), shown with raw
requests to a real server: a cross-site text/plain POST forging a bounce is refused,
and a DNS-rebinding page (its requests name the attacker's Host) reads nothing and
opens no websocket. Health probes, which reach pods by address, are not checked."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
from urllib.parse import urlsplit

import httpx
import pytest

from service.clock import wall_clock_ms
from service.settings import Settings
from tests.support import ses
from tests.support.serving import Server, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EVIL = "evil.example"


def forged_bounce() -> bytes:
    now = wall_clock_ms()
    return ses.dumps(ses.bounce("forged-1", ["victim@example.com"], at=now, sent_at=now))


async def suppressed(server: Server) -> list[object]:
    async with httpx.AsyncClient(base_url=server.base) as http:
        answer = await http.get("/v1/suppressions")
    assert answer.status_code == 200
    return answer.json()["items"]


async def test_a_cross_site_text_plain_post_without_a_token_stores_nothing() -> None:
    async with (
        serving(Settings(_env_file=None)) as server,
        httpx.AsyncClient(base_url=server.base) as http,
    ):
        # What a form or a no-cors fetch on any web page sends: text/plain, its Origin.
        page = {"Content-Type": "text/plain", "Origin": f"https://{EVIL}"}
        answer = await http.post("/v1/events", content=forged_bounce(), headers=page)
        assert answer.status_code in (403, 415) and "error" in answer.json()
        # Without the Origin (a client stripping it) the type alone refuses it.
        plain = await http.post(
            "/v1/events", content=forged_bounce(), headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415 and "error" in plain.json()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await http.post("/v1/events", content=b"a=b", headers=form)).status_code == 415
        # A rebinding page: its Origin matches the Host it names, which is its own.
        rebound = {"Host": EVIL, "Origin": f"http://{EVIL}", "Content-Type": "application/json"}
        answer = await http.post("/v1/events", content=forged_bounce(), headers=rebound)
        assert answer.status_code == 400
        assert await suppressed(server) == []
        # The page's own origin, and a script sending JSON, still ingest.
        own = {"Origin": server.base}
        answer = await http.post("/v1/events", content=forged_bounce(), headers=own)
        assert answer.status_code == 202 and answer.json()["accepted"] == 1
        packed = gzip.compress(forged_bounce())
        zipped = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        answer = await http.post("/v1/events", content=packed, headers=zipped)
        assert answer.status_code == 202
        assert len(await suppressed(server)) == 1


async def test_a_foreign_origin_cannot_delete_even_with_json() -> None:
    async with (
        serving(Settings(_env_file=None)) as server,
        httpx.AsyncClient(base_url=server.base) as http,
    ):
        answer = await http.delete(
            "/v1/suppressions/victim@example.com", headers={"Origin": f"http://{EVIL}"}
        )
        assert answer.status_code == 403


async def raw_status(server: Server, request: str) -> tuple[int, bytes]:
    """The status and body of one raw HTTP/1.1 request, sent as written."""
    parts = urlsplit(server.base)
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(request.encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
        finally:
            writer.close()
    return status, body


def get(path: str, host: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"


def handshake(path: str, host: str, origin: str | None = None) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_a_dns_rebinding_page_reads_nothing_and_opens_no_websocket() -> None:
    async with serving(Settings(_env_file=None)) as server:
        port = urlsplit(server.base).port
        # The rebinding page's requests name its own host, and its own origin.
        status, body = await raw_status(server, get("/v1/suppressions", f"{EVIL}:{port}"))
        assert status == 400 and b'"error"' in body
        status, _ = await raw_status(server, get("/", f"{EVIL}:{port}"))
        assert status == 400
        rebound = handshake("/v1/live", f"{EVIL}:{port}", origin=f"http://{EVIL}:{port}")
        status, body = await raw_status(server, rebound)
        assert status == 400 and b'"error"' in body
        # Probes name no host the service knows; they are answered.
        assert (await raw_status(server, get("/healthz", f"10.1.2.3:{port}")))[0] == 200
        assert (await raw_status(server, get("/readyz", f"10.1.2.3:{port}")))[0] == 200
        # Loopback names are this machine; 0.0.0.0 too, for a client on it.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"0.0.0.0:{port}"):
            assert (await raw_status(server, get("/v1/suppressions", host)))[0] == 200
        status, _ = await raw_status(server, handshake("/v1/live", f"127.0.0.1:{port}"))
        assert status == 101
        # A loopback Host from a foreign page's websocket is still refused by Origin.
        hijack = handshake("/v1/live", f"127.0.0.1:{port}", origin=f"https://{EVIL}")
        assert (await raw_status(server, hijack))[0] == 403


async def test_the_public_url_and_allowed_hosts_are_answered_and_nothing_else() -> None:
    settings = Settings(
        _env_file=None,
        public_url="https://tracker.example.com",
        allowed_hosts="tracker.internal, [fd00::5]",
    )
    async with serving(settings) as server:
        for host, status in (
            ("tracker.example.com", 200),
            ("tracker.internal:8000", 200),
            ("[fd00::5]:8000", 200),
            ("tracker.example.com.evil.example", 400),
            (EVIL, 400),
        ):
            assert (await raw_status(server, get("/v1/stats", host)))[0] == status, host
    async with serving(Settings(_env_file=None, allowed_hosts="*")) as server:
        assert (await raw_status(server, get("/v1/stats", EVIL)))[0] == 200
