"""/readyz answers any Host (it is a probe): the store's address and other details
only for a caller presenting a token, the API token or a read token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from service.settings import Settings
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API_TOKEN = "readyz-api-token-0123456789abcdef"
READ_TOKEN = "readyz-read-token-0123456789abcdef"


async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_readyz_without_a_token_does_not_show_the_redis_address(
    redis_server: RedisServer,
) -> None:
    address = redis_server.url.split("//", 1)[1].split("/", 1)[0]  # host:port
    async for client in client_for(Settings(_env_file=None, redis_url=redis_server.url)):
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert address not in ready.text
        assert ready.json()["store_kind"] == "RedisStore"


async def test_readyz_shows_the_redis_address_to_a_caller_presenting_a_token(
    redis_server: RedisServer,
) -> None:
    address = redis_server.url.split("//", 1)[1].split("/", 1)[0]
    settings = Settings(
        _env_file=None,
        redis_url=redis_server.url,
        api_token=API_TOKEN,
        read_tokens=f"oncall:{READ_TOKEN}",
    )
    async for client in client_for(settings):
        assert address not in (await client.get("/readyz")).text
        wrong = await client.get("/readyz", headers={"Authorization": "Bearer not-the-token"})
        assert address not in wrong.text
        for token in (API_TOKEN, READ_TOKEN):
            shown = await client.get("/readyz", headers={"Authorization": f"Bearer {token}"})
            assert address in shown.json()["store_kind"]
