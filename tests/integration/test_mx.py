"""#14: mailbox providers of company domains from MX records, against a DNS server
the test starts on loopback, with answers cached in a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import asyncio as aioredis

from service import stats
from service.mx import NEGATIVE_TTL_S, TTL_S, MxCache, MxResolver, dns_lookup
from service.runtime import Runtime
from service.search import SearchQuery
from service.settings import Settings
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


async def test_another_replica_reads_the_cached_answers(redis_server: RedisServer) -> None:
    dns_server = await start_mx_server(RECORDS)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    first = MxResolver(dns_lookup([dns_server.address]), MxCache(client), lookups_per_s=1000)
    second = MxResolver(dns_lookup([dns_server.address]), MxCache(client), lookups_per_s=1000)
    tasks = [asyncio.create_task(r.run()) for r in (first, second)]
    try:
        first.note("acme-on-google.example")
        await until(lambda: "acme-on-google.example" in first.providers)
        second.note("acme-on-google.example")
        await until(lambda: "acme-on-google.example" in second.providers)
        assert dns_server.questions["acme-on-google.example"] == 1
        assert second.lookups == 0
    finally:
        for task in tasks:
            task.cancel()
        await client.aclose()
        dns_server.transport.close()


async def test_lookups_are_bounded_whatever_recipients_send() -> None:
    dns_server = await start_mx_server(RECORDS)
    resolver = MxResolver(dns_lookup([dns_server.address]), max_pending=50, lookups_per_s=50)
    for n in range(1_000):
        resolver.note(f"d{n}.example")
    resolver.note("not a hostname!")
    assert resolver.dropped == 951  # 50 waiting, the rest dropped (noted again later)
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
