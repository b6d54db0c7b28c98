"""Issue #23, point 7: what bounds the ingest of big bodies over HTTP.

A full parse pool is a 429 with Retry-After (small bodies are parsed inline and go
on); a gzip body built to inflate is refused; a big body costs rate-limit tokens in
proportion to its inflated size.
"""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from service.parsing import ParsePool
from tests.support import ses
from tests.support.push import FIREHOSE_KEY_HEADER, Harness, harness_for, open_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

AUTH = {"Authorization": "Bearer api-secret"}
GZIP = {**AUTH, "Content-Encoding": "gzip"}


def firehose_body(payload: bytes) -> bytes:
    record = {"data": base64.b64encode(payload).decode()}
    return orjson.dumps({"requestId": "req-1", "timestamp": 1, "records": [record]})


def big_batch(prefix: str, count: int = 1_500) -> bytes:
    """Records enough to be parsed in the pool (over 64 KiB)."""
    return ses.dumps(*(ses.send(f"{prefix}-{n}", [f"u{n}@x.com"]) for n in range(count)))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async for h in harness_for(open_settings()):
        yield h


async def test_a_full_parse_pool_answers_429_while_small_posts_go_on(harness: Harness) -> None:
    pool = ParsePool(1, capacity=2)
    harness.runtime.pipeline.parsing = pool
    # Two big parses hold every slot (as two hostile bodies would, for seconds).
    await pool._admit(wait=False)
    await pool._admit(wait=False)
    try:
        big = await harness.client.post("/v1/events", content=big_batch("big"), headers=AUTH)
        assert big.status_code == 429, big.text
        assert int(big.headers["retry-after"]) >= 1
        assert "parser busy" in big.json()["error"]
        firehose = await harness.client.post(
            "/v1/ingest/firehose",
            content=firehose_body(big_batch("fh")),
        )
        assert firehose.status_code == 429
        assert await harness.runtime.store.get("big-0") is None
        started = time.monotonic()
        small = await harness.client.post(
            "/v1/events", content=ses.dumps(ses.send("small-1", ["a@x.com"])), headers=AUTH
        )
        assert small.status_code == 202 and time.monotonic() - started < 1.0
    finally:
        pool._release()
        pool._release()
    again = await harness.client.post("/v1/events", content=big_batch("big"), headers=AUTH)
    assert again.status_code == 202 and again.json()["accepted"] == 1_500
    assert pool.refused == 2 and pool.busy == 0
    metrics = (await harness.admin.get("/metrics")).text
    assert "ses_tracker_parse_refused_total 2.0" in metrics


async def test_a_gzip_body_built_to_inflate_is_refused(harness: Harness) -> None:
    hostile = gzip.compress(b'}{\\"' * (2 * 1024 * 1024))  # 8 MiB from ~8 KiB
    assert len(hostile) < 16 * 1024
    response = await harness.client.post("/v1/events", content=hostile, headers=GZIP)
    assert response.status_code == 413
    assert "inflates over 250x" in response.json()["error"]
    # The most repetitive legitimate batch (~127x) still goes through.
    same = ses.dumps(
        *(ses.delivery(f"0100018b-{n:08d}", ["a@x.com"], ses.SENT_AT + 9) for n in range(5_000))
    )
    assert len(same) / len(gzip.compress(same)) > 100
    legit = await harness.client.post("/v1/events", content=gzip.compress(same), headers=GZIP)
    assert legit.status_code == 202 and legit.json()["accepted"] == 5_000


async def test_a_big_body_costs_a_token_per_256_kib_inflated() -> None:
    # Almost no refill: what is spent stays spent for the test's length.
    settings = open_settings(rate_limit_per_s=0.01, rate_limit_burst=10)
    async for harness in harness_for(settings):
        app = harness.client._transport.app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = big_batch("tok", 2_600)  # just over 1 MiB inflated: 1 + 4 tokens
            assert 1024 * 1024 < len(body) < 1280 * 1024
            response = await client.post("/v1/events", content=gzip.compress(body), headers=GZIP)
            assert response.status_code == 202
            small = ses.dumps(ses.send("tok-small", ["a@x.com"]))
            answers = [
                (await client.post("/v1/events", content=small, headers=AUTH)).status_code
                for _ in range(6)
            ]
            assert answers == [202] * 5 + [429]
        # Another client pays for nothing of this one's.
        other = httpx.ASGITransport(app=app, client=("198.51.100.3", 4321))
        async with httpx.AsyncClient(transport=other, base_url="http://127.0.0.1") as client:
            response = await client.post("/v1/events", content=body, headers=AUTH)
            assert response.status_code == 202
            # 5 tokens left; a small post leaves 4: the next big one passes its
            # request's token, then is refused for its body, before any parse.
            small = ses.dumps(ses.send("tok-other", ["a@x.com"]))
            assert (await client.post("/v1/events", content=small, headers=AUTH)).status_code == 202
            refused = await client.post("/v1/events", content=body, headers=AUTH)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 1
            assert "costs 5 tokens" in refused.json()["error"]


async def test_a_body_costing_more_than_the_burst_is_payable_once_with_a_full_bucket() -> None:
    settings = open_settings(rate_limit_per_s=0.01, rate_limit_burst=4)
    async for harness in harness_for(settings):
        app = harness.client._transport.app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 4321))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=FIREHOSE_KEY_HEADER
        ) as client:
            body = big_batch("fhtok", 2_600)  # over 1 MiB: 1 + 4 tokens, over the burst
            response = await client.post("/v1/ingest/firehose", content=firehose_body(body))
            # Charged as the whole burst: payable once with a full bucket, then not.
            assert response.status_code == 200, response.text
            again = await client.post("/v1/ingest/firehose", content=firehose_body(body))
            assert again.status_code == 429
            assert harness.runtime.rate_limiter.limited == 1
