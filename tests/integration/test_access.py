"""Sessions (/v1/session) and read-only tokens, against the app (httpx, ASGI) and,
for the websocket, a real uvicorn."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import websockets
from fastapi import APIRouter, FastAPI

from api.app import create_app
from service.settings import Settings
from service.timestamps import format_ms
from tests.support.process import clean_environment, command
from tests.support.servers import RedisServer
from tests.support.serving import serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API = "api-token-0123456789abcdefXYZ"
READ = "support-token-0123456789abcdef"
NOW = 1_790_000_000_000
HOUR_MS = 3_600_000

# Non-GET routes that answer a read token on their own terms, and why.
EXEMPT = {
    # Sign-in takes any accepted token; sign-out must work for every session.
    ("post", "/v1/session"): "opens a session of the token's own scope",
    ("delete", "/v1/session"): "closes the caller's own session",
    # Push endpoints authenticate by SNS signature and Firehose access key, not tokens.
    ("post", "/v1/ingest/sns"): "SNS signature",
    ("post", "/v1/ingest/firehose"): "Firehose access key",
}


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW

    def __call__(self) -> int:
        return self.now_ms


def settings_for(redis_url: str | None = None, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        api_token=API,
        read_tokens=f"support:{READ}",
        redis_url=redis_url,
        cache_ttl_s=0,
        **extra,
    )


async def app_client(
    settings: Settings, clock: Callable[[], int] = lambda: NOW
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, clock_ms=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield app, client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def client(
    request: pytest.FixtureRequest, redis_server: RedisServer, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = redis_server.url if request.param == "redis" else None
    if redis_url:
        flusher = aioredis.Redis.from_url(redis_url)
        await flusher.flushdb()
        await flusher.aclose()
    async for _, c in app_client(settings_for(redis_url), clock):
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie_of(response: httpx.Response) -> str:
    match = re.match(r"st_session=([^;]+);", response.headers["set-cookie"])
    assert match is not None, response.headers["set-cookie"]
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    """The Cookie header of a new session (sent by hand: replay is the point)."""
    response = await client.post("/v1/session", json={"token": token})
    assert response.status_code == 204, response.text
    return {"Cookie": f"st_session={cookie_of(response)}"}


def state_changing_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method not in ("get", "head", "options")
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "someone@example.com", path)


async def unguarded(app: FastAPI, client: httpx.AsyncClient) -> list[str]:
    """Every state-changing route (but EXEMPT) that does not refuse a read token and
    a read session with 403 {"error"}."""
    session = await sign_in(client, READ)
    found = []
    for method, path in state_changing_routes(app):
        if (method, path) in EXEMPT:
            continue
        for headers in (bearer(READ), session):
            response = await client.request(method, concrete(path), headers=headers, json={})
            if response.status_code != 403 or "error" not in response.json():
                found.append(f"{method.upper()} {path}: {response.status_code}")
    return found


async def test_every_state_changing_route_refuses_a_read_token_and_a_read_session(
    client: httpx.AsyncClient,
) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    routes = state_changing_routes(app)
    assert set(EXEMPT) <= set(routes), "EXEMPT names a route that is gone"
    assert {("delete", "/v1/recipients/{address}"), ("post", "/v1/events")} <= set(routes)
    assert await unguarded(app, client) == []
    # The write token passes the guard (what the route then says is its own business).
    for method, path in routes:
        if (method, path) not in EXEMPT:
            response = await client.request(method, concrete(path), headers=bearer(API))
            assert response.status_code not in (401, 403), (method, path, response.text)


async def test_the_table_test_finds_a_new_state_changing_route_without_the_guard() -> None:
    async for app, client in app_client(settings_for()):
        careless = APIRouter()

        @careless.post("/v1/careless")
        async def change_something() -> dict[str, bool]:
            return {"changed": True}

        app.include_router(careless)
        app.openapi_schema = None
        assert await unguarded(app, client) == ["POST /v1/careless: 200", "POST /v1/careless: 200"]


async def test_a_read_token_and_its_session_read_everything_and_open_the_page(
    client: httpx.AsyncClient,
) -> None:
    session = await sign_in(client, READ)
    for headers in (bearer(READ), session):
        assert (await client.get("/v1/stats", headers=headers)).status_code == 200
        assert (await client.get("/v1/suppressions", headers=headers)).status_code == 200
        assert (await client.get("/v1/messages/nope", headers=headers)).status_code == 404
    answer = await client.get("/v1/session", headers=session)
    assert answer.json() == {
        "scope": "read",
        "name": "support",
        "expires_at": format_ms(NOW + 12 * HOUR_MS),
    }
    assert (await client.get("/v1/session", headers=bearer(READ))).json() == {
        "scope": "read",
        "name": "support",
        "expires_at": None,
    }
    page = await client.get("/")  # the shell needs no token
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


async def test_sign_in_sets_an_httponly_strict_cookie_that_holds_no_token(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/session", json={"token": API})
    assert response.status_code == 204
    set_cookie = response.headers["set-cookie"]
    flags = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= flags
    assert "secure" not in flags  # plain http here: a Secure cookie would never return
    assert API not in set_cookie and READ not in set_cookie
    headers = {"Cookie": f"st_session={cookie_of(response)}"}
    assert (await client.get("/v1/session", headers=headers)).json() == {
        "scope": "write",
        "name": "api",
        "expires_at": format_ms(NOW + 12 * HOUR_MS),
    }
    assert (await client.get("/v1/stats", headers=headers)).status_code == 200
    assert (
        await client.delete("/v1/suppressions/a@example.com", headers=headers)
    ).status_code == 404


async def test_the_cookie_is_secure_when_the_public_url_is_https() -> None:
    async for _, client in app_client(settings_for(public_url="https://ses.example.com")):
        response = await client.post("/v1/session", json={"token": API})
        assert "secure" in response.headers["set-cookie"].lower().split("; ")


async def test_a_session_ends_after_12_hours(client: httpx.AsyncClient, clock: Clock) -> None:
    session = await sign_in(client, API)
    clock.now_ms = NOW + 12 * HOUR_MS - 1
    assert (await client.get("/v1/stats", headers=session)).status_code == 200
    clock.now_ms = NOW + 12 * HOUR_MS
    assert (await client.get("/v1/stats", headers=session)).status_code == 401
    assert (await client.get("/v1/session", headers=session)).status_code == 401


async def test_a_cookie_replayed_after_sign_out_is_refused(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    session = await sign_in(client, API)
    other = await sign_in(client, API)
    response = await client.delete("/v1/session", headers=session)
    assert response.status_code == 204
    cleared = response.headers["set-cookie"].lower()
    assert cleared.startswith('st_session="";') or "max-age=0" in cleared
    clock.now_ms = NOW + HOUR_MS
    for path in ("/v1/session", "/v1/stats"):
        answer = await client.get(path, headers=session)
        assert answer.status_code == 401 and "error" in answer.json()
    assert (await client.get("/v1/stats", headers=other)).status_code == 200
    assert (await client.delete("/v1/session", headers=session)).status_code == 204


async def test_a_wrong_token_gets_401_and_no_cookie(client: httpx.AsyncClient) -> None:
    for token in ("wrong-token-0123456789abcdef", API[:-1], ""):
        response = await client.post("/v1/session", json={"token": token})
        assert response.status_code in (401, 422)
        assert "set-cookie" not in response.headers
        assert token == "" or response.status_code == 401
    assert (await client.get("/v1/session")).status_code == 401
    forged = {"Cookie": "st_session=v1.eyJpZCI6IngifQ.AAAA"}
    assert (await client.get("/v1/stats", headers=forged)).status_code == 401
    not_json = await client.post(
        "/v1/session", content=b"token", headers={"Content-Type": "text/plain"}
    )
    assert not_json.status_code == 415


async def test_sign_in_is_rate_limited_like_other_sensitive_routes() -> None:
    limited = settings_for(rate_limit_per_s=0.01, rate_limit_burst=3, rate_limit_loopback=True)
    async for _, client in app_client(limited):
        answers = [
            (await client.post("/v1/session", json={"token": f"guess-{n:030d}"})).status_code
            for n in range(5)
        ]
        assert answers[:3] == [401, 401, 401] and answers[3:] == [429, 429]


async def test_rotating_the_api_token_revokes_every_session() -> None:
    async for _, client in app_client(settings_for()):
        write, read = await sign_in(client, API), await sign_in(client, READ)
    rotated = Settings(
        _env_file=None, api_token="rotated-api-token-0123456789", read_tokens=f"support:{READ}"
    )
    async for _, client in app_client(rotated):
        for session in (write, read):
            assert (await client.get("/v1/stats", headers=session)).status_code == 401


async def test_a_foreign_origin_cannot_sign_in_nor_change_state(client: httpx.AsyncClient) -> None:
    evil = {"Origin": "https://evil.example"}
    response = await client.post("/v1/session", json={"token": API}, headers=evil)
    assert response.status_code == 403 and "set-cookie" not in response.headers
    erase = await client.delete("/v1/recipients/a@example.com", headers={**bearer(API), **evil})
    assert erase.status_code == 403
    own = {"Origin": "http://127.0.0.1"}
    assert (await client.post("/v1/session", json={"token": API}, headers=own)).status_code == 204


async def test_a_token_in_an_http_query_is_not_read(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/stats", params={"token": API})).status_code == 401


async def test_docs_and_the_schema_open_with_a_session(client: httpx.AsyncClient) -> None:
    session = await sign_in(client, READ)
    assert (await client.get("/docs", headers=session)).status_code == 200
    schema = await client.get("/openapi.json", headers=session)
    assert schema.status_code == 200 and "/v1/session" in schema.json()["paths"]


async def test_an_open_service_says_so_and_needs_no_session() -> None:
    async for _, client in app_client(Settings(_env_file=None)):
        assert (await client.get("/v1/session")).json() == {
            "scope": "write",
            "name": None,
            "expires_at": None,
        }
        response = await client.post("/v1/session", json={"token": "anything"})
        assert response.status_code == 204 and "set-cookie" not in response.headers


async def test_the_websocket_accepts_a_session_and_refuses_it_after_sign_out() -> None:
    async with serving(settings_for()) as server, httpx.AsyncClient(base_url=server.base) as http:
        session = await sign_in(http, READ)
        for url, headers in (
            (f"{server.ws}/v1/live", session),
            (f"{server.ws}/v1/live?token={READ}", None),
        ):
            async with websockets.connect(url, additional_headers=headers) as ws:
                async with asyncio.timeout(5):
                    assert orjson.loads(await ws.recv())["type"] in ("stats", "transitions")
        assert (await http.delete("/v1/session", headers=session)).status_code == 204
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{server.ws}/v1/live", additional_headers=session):
                pass
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{server.ws}/v1/live"):
                pass


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https() -> None:
    # uvicorn trusts X-Forwarded-Proto from FORWARDED_ALLOW_IPS (loopback by default).
    async with serving(settings_for()) as server, httpx.AsyncClient(base_url=server.base) as http:
        proxied = await http.post(
            "/v1/session", json={"token": API}, headers={"X-Forwarded-Proto": "https"}
        )
        plain = await http.post("/v1/session", json={"token": API})
    assert "secure" in proxied.headers["set-cookie"].lower().split("; ")
    assert "secure" not in plain.headers["set-cookie"].lower().split("; ")


def test_read_tokens_without_the_api_token_stop_serve_with_exit_2_naming_both() -> None:
    environment = clean_environment()
    environment["SES_TRACKER_READ_TOKENS"] = f"support:{READ}"
    result = subprocess.run(
        [*command(), "serve"], env=environment, capture_output=True, timeout=30, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "SES_TRACKER_READ_TOKENS" in result.stderr
    assert "SES_TRACKER_API_TOKEN" in result.stderr
    assert READ not in result.stderr and "Traceback" not in result.stderr
