"""#14: mailbox providers of company domains from MX records, against a DNS server
the test starts on loopback, with answers cached in a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import asyncio as aioredis

from service import mx, stats
from service.mx import NEGATIVE_TTL_S, TTL_S, MxCache, MxResolver, dns_lookup
from service.runtime import Runtime
from service.search import SearchQuery
from service.settings import Settings
from service.stores.redis.keyspace import RedisKeyspace
from tests.support import ses
from tests.support.dns import start_mx_server
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RECORDS = {
    "acme-on-google.example": ["alt1.aspmx.l.google.com", "aspmx.l.google.com"],
    "corp-on-m365.example": ["corp-on-m365-example.mail.protection.outlook.com"],
    "self-hosted.example": ["mx1.self-hosted.example"],
}


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_company_domains_get_their_provider_once_looked_up(redis_server: RedisServer) -> None:
    dns_server = await start_mx_server(RECORDS, failing=frozenset({"flaky.example"}))
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    settings = Settings(
        _env_file=None,
        redis_url=redis_server.url,
        resolve_mx=True,
        mx_nameservers=dns_server.address,
    )
    now = int(time.time() * 1000)
    runtime = Runtime(settings)
    assert runtime.mx is not None
    resolver = runtime.mx
    task = asyncio.create_task(resolver.run())
    try:
        addresses = [f"a@{domain}" for domain in [*RECORDS, "nowhere.example", "flaky.example"]]
        first = [ses.send(f"mx-{n}", [address], now) for n, address in enumerate(addresses)]
        await runtime.pipeline.ingest(ses.dumps(*first), "http")
        window = await runtime.store.read_stats(*stats.window_buckets(now, 300))
        # Until answered, a company domain is "other": nothing waits on DNS.
        assert window["g:provider=other|c:sent"] == 5
        await until(lambda: resolver.lookups == 5 and resolver.failures == 1)
        assert resolver.providers == {
            "acme-on-google.example": "gmail",
            "corp-on-m365.example": "microsoft",
        }
        second = [ses.send(f"mx2-{n}", [address], now) for n, address in enumerate(addresses)]
        await runtime.pipeline.ingest(ses.dumps(*second), "http")
        window = await runtime.store.read_stats(*stats.window_buckets(now, 300))
        assert window["g:provider=gmail|c:sent"] == 1
        assert window["g:provider=microsoft|c:sent"] == 1
        assert window["g:provider=other|c:sent"] == 5 + 3
        # Search's provider filter knows them too.
        found = await runtime.store.search(
            SearchQuery(provider="gmail", resolved=runtime.pipeline.dimensions.resolved)
        )
        assert sorted(hit.message_id for hit in found.hits) == ["mx-0", "mx2-0"]
        unresolved = await runtime.store.search(SearchQuery(provider="gmail"))
        assert unresolved.hits == []  # without the answers, a company domain is other
        # Answers are cached in Redis with a TTL, negative ones too; a failure is not.
        prefix = "st:mx:"
        assert await client.get(prefix + "acme-on-google.example") == b"gmail"
        assert 0 < await client.ttl(prefix + "acme-on-google.example") <= TTL_S
        assert await client.get(prefix + "nowhere.example") == b"other"
        assert 0 < await client.ttl(prefix + "nowhere.example") <= NEGATIVE_TTL_S
        assert await client.get(prefix + "flaky.example") is None
        # Noting a known domain again asks nobody.
        asked = sum(dns_server.questions.values())
        for _ in range(3):
            await runtime.pipeline.ingest(ses.dumps(*second), "http")
        await asyncio.sleep(0.2)
        assert sum(dns_server.questions.values()) == asked
    finally:
        task.cancel()
        await runtime.store.close()
        await client.aclose()
        dns_server.transport.close()


@contextlib.asynccontextmanager
async def two_replicas(
    redis_server: RedisServer, dns_server: Any
) -> AsyncIterator[tuple[aioredis.Redis, MxResolver, MxResolver]]:
    """Two resolvers sharing one Redis cache (two replicas), running; the DNS
    server closed after."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    cache = RedisKeyspace.of(client)
    first = MxResolver(dns_lookup([dns_server.address]), MxCache(cache), lookups_per_s=1000)
    second = MxResolver(dns_lookup([dns_server.address]), MxCache(cache), lookups_per_s=1000)
    tasks = [asyncio.create_task(r.run()) for r in (first, second)]
    try:
        yield client, first, second
    finally:
        for task in tasks:
            task.cancel()
        await client.aclose()
        dns_server.transport.close()


async def test_another_replica_reads_the_cached_answers(redis_server: RedisServer) -> None:
    dns_server = await start_mx_server(RECORDS)
    async with two_replicas(redis_server, dns_server) as (_, first, second):
        first.note("acme-on-google.example")
        await until(lambda: "acme-on-google.example" in first.providers)
        second.note("acme-on-google.example")
        await until(lambda: "acme-on-google.example" in second.providers)
        assert dns_server.questions["acme-on-google.example"] == 1
        assert second.lookups == 0


async def test_lookups_are_bounded_whatever_recipients_send() -> None:
    dns_server = await start_mx_server(RECORDS)
    resolver = MxResolver(dns_lookup([dns_server.address]), max_pending=50, lookups_per_s=50)
    for n in range(1_000):
        resolver.note(f"d{n}.example")
    resolver.note("not a hostname!")
    # 50 waiting, the rest dropped (noted again later); a non-hostname costs nothing
    # (answered "other" at once), so it is never dropped.
    assert resolver.dropped == 950 and resolver.skipped == 1
    task = asyncio.create_task(resolver.run())
    try:
        started = time.monotonic()
        await until(lambda: resolver.lookups == 50, timeout_s=10)
        # 50 lookups at 50 a second: about a second, not at once.
        assert time.monotonic() - started >= 0.8
        assert sum(dns_server.questions.values()) == 50
    finally:
        task.cancel()
        dns_server.transport.close()
    refusing = MxResolver(dns_lookup([dns_server.address]))
    refusing.note("not a hostname!")
    task = asyncio.create_task(refusing.run())
    try:
        await until(lambda: "not a hostname!" not in refusing._pending)
        await asyncio.sleep(0.05)
        assert refusing.lookups == 0  # refused without asking DNS
    finally:
        task.cancel()
        dns_server.transport.close()


INTERNAL = [
    "db.internal",
    "printer.local",
    "api.default.svc.cluster.local",
    "node.cluster.local",
    "nas.lan",
    "router.home.arpa",
    "files.corp",
    "localhost",
    "intranet-host",
]


async def test_an_internal_name_is_never_sent_to_the_resolver() -> None:
    dns_server = await start_mx_server(RECORDS)
    resolver = MxResolver(dns_lookup([dns_server.address]), lookups_per_s=1000)
    task = asyncio.create_task(resolver.run())
    try:
        for name in [*INTERNAL, "acme-on-google.example"]:
            resolver.note(name)
        await until(lambda: "acme-on-google.example" in resolver.providers)
        await asyncio.sleep(0.1)
        assert set(dns_server.questions) == {"acme-on-google.example"}
        assert not set(INTERNAL) & set(resolver.providers)  # they count as other
        # ... and are not noted again: answered for as long as a negative answer.
        for name in INTERNAL:
            resolver.note(name)
        await asyncio.sleep(0.05)
        assert set(dns_server.questions) == {"acme-on-google.example"}
    finally:
        task.cancel()
        dns_server.transport.close()


async def test_a_slow_name_does_not_delay_another_names_answer() -> None:
    dns_server = await start_mx_server(RECORDS, slow={"slow.example": 2.0})
    resolver = MxResolver(dns_lookup([dns_server.address]), lookups_per_s=1000)
    task = asyncio.create_task(resolver.run())
    try:
        resolver.note("slow.example")
        await until(lambda: dns_server.questions["slow.example"] == 1)
        started = time.monotonic()
        resolver.note("acme-on-google.example")
        resolver.note("corp-on-m365.example")
        await until(lambda: len(resolver.providers) == 2, timeout_s=1.0)
        assert time.monotonic() - started < 0.5  # not after the slow one's 2 s
    finally:
        task.cancel()
        dns_server.transport.close()


async def test_a_timed_out_name_is_not_asked_again_within_its_cache_time(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mx, "LOOKUP_TIMEOUT_S", 0.3)
    dns_server = await start_mx_server(RECORDS, slow={"slow.example": 30.0})
    async with two_replicas(redis_server, dns_server) as (client, first, second):
        first.note("slow.example")
        await until(lambda: first.failures == 1)
        asked = dns_server.questions["slow.example"]
        # Noted again by this replica, and by another sharing the cache: nobody asks.
        first.note("slow.example")
        second.note("slow.example")
        second.note("acme-on-google.example")
        await until(lambda: "acme-on-google.example" in second.providers)
        await asyncio.sleep(0.4)  # past a lookup's timeout: a question would be in
        assert dns_server.questions["slow.example"] == asked
        assert "slow.example" not in second.providers  # other meanwhile
        # For minutes, not a day as a negative answer.
        assert 0 < await client.ttl("st:mx:slow.example") <= mx.TIMEOUT_TTL_S
