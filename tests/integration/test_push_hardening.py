"""The push endpoints as an attacker meets them: forged, replayed, stale, closed, gzip."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import structlog

from service.settings import Settings
from tests.support import ses
from tests.support.push import Harness, harness_for, open_settings, signed
from tests.support.servers import RedisServer
from tests.support.sns import notification, now_stamp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async for h in harness_for(open_settings()):
        yield h


# --- 1. only the signed Message is ever parsed -------------------------------------


@pytest.mark.parametrize(
    "forged_fields",
    [
        # The parser used to prefer these shapes over the SNS envelope.
        {
            "Records": [
                {
                    "EventSource": "aws:sns",
                    "Sns": ses.sns(ses.bounce("forged", ["v@x.com"], ses.SENT_AT + 5)),
                }
            ]
        },
        {
            "detail-type": "Email Bounced",
            "source": "aws.ses",
            "detail": ses.bounce("forged", ["v@x.com"], ses.SENT_AT + 5),
        },
        ses.bounce("forged", ["v@x.com"], ses.SENT_AT + 5),
    ],
)
async def test_unsigned_fields_beside_a_signed_message_reach_nothing(
    harness: Harness, forged_fields: dict
) -> None:
    genuine = orjson.loads(signed(harness, ses.send("genuine", ["a@x.com"]), message_id="g-1"))
    body = orjson.dumps({**forged_fields, **genuine})
    response = await harness.client.post("/v1/ingest/sns", content=body)
    assert response.status_code == 200, response.text
    assert await harness.runtime.store.get("forged") is None
    assert (await harness.runtime.store.get("genuine")).status() == "sent"


# --- 1. freshness and replays --------------------------------------------------------


@pytest.mark.parametrize("offset_s", [-3_901, -86_400, 3_600])
async def test_stale_or_future_messages_are_403(harness: Harness, offset_s: float) -> None:
    record = orjson.dumps(ses.send("old", ["a@x.com"])).decode()
    message = harness.signer.sign(notification(record, "old-1", timestamp=now_stamp(offset_s)))
    response = await harness.client.post("/v1/ingest/sns", content=orjson.dumps(message))
    assert response.status_code == 403
    assert "Timestamp" in response.json()["error"]
    assert await harness.runtime.store.get("old") is None


async def test_a_captured_message_cannot_be_replayed_to_another_replica(
    redis_server: RedisServer,
) -> None:
    settings = open_settings(redis_url=redis_server.url, cache_ttl_s=0)
    async for first in harness_for(settings):
        async for second in harness_for(settings):
            second.signer = first.signer  # one SNS: both replicas trust its certificate
            second.runtime.sns_verifier = first.runtime.sns_verifier
            body = signed(first, ses.send("replayed", ["a@x.com"]), message_id="capture-1")
            assert (await first.client.post("/v1/ingest/sns", content=body)).json()["accepted"] == 1
            again = await second.client.post("/v1/ingest/sns", content=body)
            assert again.json() == {"duplicate": True}
            assert "sns" not in second.runtime.pipeline.counters


async def test_the_topic_is_checked_before_any_certificate_is_fetched() -> None:
    settings = open_settings(sns_topic_arns="arn:aws:sns:us-east-1:123456789012:mine")
    async for harness in harness_for(settings):
        verifier = harness.runtime.sns_verifier
        for n in range(20):
            message = orjson.loads(signed(harness, ses.send(f"t{n}", ["a@x.com"])))
            message["SigningCertURL"] = f"https://sns.us-east-1.amazonaws.com/c-{n}.pem"
            response = await harness.client.post("/v1/ingest/sns", content=orjson.dumps(message))
            assert response.status_code == 403
        assert verifier.fetches == 0


# --- 2. closed by default --------------------------------------------------------------


async def test_push_endpoints_are_closed_until_configured() -> None:
    async for harness in harness_for(Settings(_env_file=None)):
        sns = await harness.client.post(
            "/v1/ingest/sns", content=signed(harness, ses.send("c", ["a@x.com"]))
        )
        assert sns.status_code == 403
        assert "SES_TRACKER_SNS_TOPIC_ARNS" in sns.json()["error"]
        firehose = await harness.client.post(
            "/v1/ingest/firehose", content=b'{"requestId": "r", "records": []}'
        )
        assert firehose.status_code == 403
        assert "SES_TRACKER_FIREHOSE_ACCESS_KEY" in firehose.json()["error"]
        assert "SES_TRACKER_FIREHOSE_ACCESS_KEY" in firehose.json()["errorMessage"]
        assert await harness.runtime.store.get("c") is None


# --- 11. gzip --------------------------------------------------------------------------


async def test_every_gzip_member_is_read(harness: Harness) -> None:
    body = gzip.compress(ses.dumps(ses.send("gz-1", ["a@x.com"])) + b"\n") + gzip.compress(
        ses.dumps(ses.delivery("gz-1", ["a@x.com"], ses.SENT_AT + 5))
    )
    response = await harness.client.post(
        "/v1/events",
        content=body,
        headers={"Content-Encoding": "gzip", "Authorization": "Bearer api-secret"},
    )
    assert response.status_code == 202 and response.json()["accepted"] == 2
    assert (await harness.runtime.store.get("gz-1")).status() == "delivered"


@pytest.mark.parametrize("cut", [-4, -20, 15])
async def test_truncated_gzip_is_400_and_stores_nothing(harness: Harness, cut: int) -> None:
    whole = gzip.compress(ses.dumps(ses.send("gz-2", ["a@x.com"])))
    response = await harness.client.post(
        "/v1/events",
        content=whole[:cut],
        headers={"Content-Encoding": "gzip", "Authorization": "Bearer api-secret"},
    )
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]
    assert await harness.runtime.store.get("gz-2") is None


# --- 15. rate limits ---------------------------------------------------------------


async def test_push_and_ingest_endpoints_are_rate_limited_per_client() -> None:
    settings = open_settings(rate_limit_per_s=1, rate_limit_burst=3)
    async for harness in harness_for(settings):
        app = harness.client._transport.app  # type: ignore[attr-defined]
        for client_host in ("203.0.113.5", "198.51.100.7"):
            transport = httpx.ASGITransport(app=app, client=(client_host, 4321))
            async with httpx.AsyncClient(transport=transport, base_url="http://[::1]") as client:
                auth = {"Authorization": "Bearer api-secret"}
                answers = [
                    (await client.post("/v1/events", content=b"[]", headers=auth)).status_code
                    for _ in range(4)
                ]
                assert answers == [400, 400, 400, 429]
                limited = await client.post("/v1/ingest/sns", content=b"{}")
                assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
                assert limited.json()["error"] == "too many requests from this client"
                # Reads are not limited.
                assert (await client.get("/healthz")).status_code == 200


async def test_loopback_is_not_limited_by_default() -> None:
    async for harness in harness_for(open_settings(rate_limit_per_s=1, rate_limit_burst=1)):
        auth = {"Authorization": "Bearer api-secret"}
        for _ in range(5):
            response = await harness.client.post("/v1/events", content=b"[]", headers=auth)
            assert response.status_code == 400


# --- 3. bounded answers and one log line per payload ---------------------------------


async def test_a_payload_of_many_bad_records_gets_a_bounded_answer_and_one_log_line(
    harness: Harness,
) -> None:
    bad = b'{"eventType": "Zap", "mail": {"messageId": "m", "timestamp": "2023-11-14T22:13:20Z"}}'
    body = b"\n".join([bad] * 5_000 + [ses.dumps(ses.send("one-good", ["a@x.com"]))])
    with structlog.testing.capture_logs() as logged:
        response = await harness.client.post(
            "/v1/events", content=body, headers={"Authorization": "Bearer api-secret"}
        )
    answer = response.json()
    assert response.status_code == 202
    assert (answer["accepted"], answer["rejected"]) == (1, 5_000)
    assert len(answer["errors"]) == 100 and answer["error_codes"] == {"unknown_type": 5_000}
    rejected_lines = [line for line in logged if line["event"] == "records_rejected"]
    assert len(rejected_lines) == 1 and rejected_lines[0]["count"] == 5_000
    assert len(response.content) < 20_000


async def test_an_event_dated_years_ahead_is_rejected_over_http(harness: Harness) -> None:
    ahead = ses.eventbridge_account("Sending Status Disabled", 7_000_000_000_000)  # 2191
    response = await harness.client.post(
        "/v1/events", content=orjson.dumps(ahead), headers={"Authorization": "Bearer api-secret"}
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == {"future_timestamp": 1}


async def test_an_event_without_a_send_time_is_accepted_end_to_end(harness: Harness) -> None:
    """14. Through the app's whole wiring (metrics, live feed, stats) and back."""
    record = ses.delivery("bare-1", ["a@x.com"], ses.SENT_AT + 9)
    del record["mail"]["timestamp"]
    auth = {"Authorization": "Bearer api-secret"}
    response = await harness.client.post("/v1/events", content=orjson.dumps(record), headers=auth)
    assert response.status_code == 202 and response.json()["accepted"] == 1
    view = (await harness.client.get("/v1/messages/bare-1", headers=auth)).json()
    assert view["status"] == "delivered" and view["sent_at"] is None
    assert view["notes"] and view["overdue"] is False
    metrics = (await harness.admin.get("/metrics")).text
    assert "ses_tracker_email_latency_seconds" in metrics
