"""Rate limits behind a proxy (issue #26 point 2), through a real uvicorn as serve runs
it: X-Forwarded-For is believed only from the trusted proxy and walked from the right,
a loopback client is exempt only as the TCP peer itself (never through the proxy),
and IPv6 clients count by their /64.

The test client is on loopback, so loopback plays the trusted proxy here, as a
sidecar or a reverse proxy on the host does.
"""

from __future__ import annotations

import httpx
import pytest

from service.settings import Settings
from tests.support.serving import Server, serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BURST = 5
TRIES = 12


def limited_settings(**extra: object) -> Settings:
    return Settings(
        _env_file=None,
        rate_limit_per_s=0.01,
        rate_limit_burst=BURST,
        forwarded_allow_ips="127.0.0.1",
        **extra,
    )


async def count_limited(server: Server, forwarded_for: list[str | None]) -> int:
    """How many of these requests (one per X-Forwarded-For value) got 429."""
    limited = 0
    async with httpx.AsyncClient(base_url=server.base) as http:
        for value in forwarded_for:
            headers = {} if value is None else {"X-Forwarded-For": value}
            answer = await http.post("/v1/events", content=b"{}", headers=headers)
            assert answer.status_code in (400, 429), answer.text
            limited += answer.status_code == 429
    return limited


# (what each request's X-Forwarded-For says, whether the client gets limited)
TABLE = {
    # A client rotating what it writes; the proxy appends the address it saw.
    "rotating, proxy appends": ([f"198.51.100.{n}, 203.0.113.7" for n in range(TRIES)], True),
    # A client claiming to be loopback; the proxy appends the address it saw.
    "loopback claimed": (["127.0.0.1, 203.0.113.8"] * TRIES, True),
    # The proxy says the client is on its own machine: a client, not this one.
    "loopback through the proxy": (["127.0.0.1"] * TRIES, True),
    "ipv4-mapped loopback through the proxy": (["::ffff:127.0.0.1"] * TRIES, True),
    # One IPv6 subscriber walking its /64.
    "one ipv6 /64": ([f"2001:db8:1:2::{n:x}" for n in range(1, TRIES + 1)], True),
    # Different /64s are different clients.
    "many ipv6 /64s": ([f"2001:db8:1:{n:x}::1" for n in range(1, TRIES + 1)], False),
    # This machine itself, no proxy in between: exempt.
    "loopback peer, no proxy headers": ([None] * TRIES, False),
}


@pytest.mark.parametrize("case", list(TABLE))
async def test_forwarded_clients_are_limited_and_only_the_local_peer_is_exempt(
    case: str,
) -> None:
    values, should_limit = TABLE[case]
    async with serving(limited_settings()) as server:
        limited = await count_limited(server, values)
    if should_limit:
        assert limited == TRIES - BURST, case
    else:
        assert limited == 0, case


async def test_a_peer_not_trusted_as_a_proxy_is_keyed_by_itself() -> None:
    # Loopback not trusted: X-Forwarded-For is ignored and the local peer exempt.
    settings = limited_settings().model_copy(update={"forwarded_allow_ips": "10.0.0.0/16"})
    async with serving(settings) as server:
        assert await count_limited(server, [f"198.51.100.{n}" for n in range(TRIES)]) == 0
    with_loopback_limited = settings.model_copy(update={"rate_limit_loopback": True})
    async with serving(with_loopback_limited) as server:
        rotating = [f"198.51.100.{n}" for n in range(TRIES)]
        assert await count_limited(server, rotating) == TRIES - BURST
