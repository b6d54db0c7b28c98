"""POST /v1/ingest/sns and /v1/ingest/firehose, in-process and end to end with moto."""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiobotocore.session import get_session

from api.app import create_app
from consumers.sns import SnsVerifier
from service.runtime import Runtime
from service.settings import Settings
from tests.support import ses
from tests.support.push import Harness, harness_for, open_settings, signed
from tests.support.servers import MotoServer, free_port, wait_for_port
from tests.support.sns import notification, subscription_confirmation

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T = ses.SENT_AT


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async for h in harness_for(open_settings()):
        yield h


# --- SNS -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notification_is_ingested_without_the_api_token(
    harness: Harness, version: str
) -> None:
    response = await harness.client.post(
        "/v1/ingest/sns",
        content=signed(harness, ses.delivery("s-1", ["a@x.com"], T + 5), version=version),
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "rejected": 0, "ignored": 0}
    assert (await harness.runtime.store.get("s-1")).status() == "delivered"


async def test_retried_notification_is_deduplicated_by_message_id(harness: Harness) -> None:
    body = signed(harness, ses.send("s-2", ["a@x.com"]), message_id="same-id")
    assert (await harness.client.post("/v1/ingest/sns", content=body)).json()["accepted"] == 1
    again = await harness.client.post("/v1/ingest/sns", content=body)
    assert again.json() == {"duplicate": True}
    assert harness.runtime.pipeline.counters["sns"].records == 1


async def test_forged_notification_is_403(harness: Harness) -> None:
    message = orjson.loads(signed(harness, ses.send("s-3", ["a@x.com"])))
    message["Message"] = message["Message"].replace("a@x.com", "evil@x.com")
    response = await harness.client.post("/v1/ingest/sns", content=orjson.dumps(message))
    assert response.status_code == 403
    assert "signature" in response.json()["error"]
    assert await harness.runtime.store.get("s-3") is None


async def test_unsigned_or_garbage_bodies(harness: Harness) -> None:
    assert (await harness.client.post("/v1/ingest/sns", content=b"{")).status_code == 400
    unsigned = orjson.dumps(notification("{}"))
    assert (await harness.client.post("/v1/ingest/sns", content=unsigned)).status_code == 403


async def test_subscription_is_confirmed_by_visiting_subscribe_url(harness: Harness) -> None:
    body = orjson.dumps(harness.signer.sign(subscription_confirmation()))
    response = await harness.client.post("/v1/ingest/sns", content=body)
    assert response.json() == {"confirmed": True}
    assert harness.confirmed == [subscription_confirmation()["SubscribeURL"]]


async def test_subscribe_url_off_sns_is_never_visited(harness: Harness) -> None:
    message = {
        **subscription_confirmation(),
        "SubscribeURL": "http://169.254.169.254/latest/meta-data",
    }
    response = await harness.client.post(
        "/v1/ingest/sns", content=orjson.dumps(harness.signer.sign(message))
    )
    assert response.status_code == 403
    assert harness.confirmed == []


async def test_topic_allow_list() -> None:
    settings = open_settings(sns_topic_arns="arn:aws:sns:us-east-1:123456789012:mine")
    async for harness in harness_for(settings):
        response = await harness.client.post(
            "/v1/ingest/sns", content=signed(harness, ses.send("s-4", []))
        )
        assert response.status_code == 403 and response.json()["error"] == "topic not allowed"


# --- Firehose ---------------------------------------------------------------------


def firehose_body(records: list[bytes], request_id: str = "req-1") -> bytes:
    return orjson.dumps(
        {
            "requestId": request_id,
            "timestamp": 1_700_000_000_000,
            "records": [{"data": base64.b64encode(r).decode()} for r in records],
        }
    )


async def test_firehose_delivery_is_ingested_and_answered_in_firehose_format(
    harness: Harness,
) -> None:
    records = [
        ses.dumps(ses.send("f-1", ["a@x.com"])) + b"\n",
        ses.dumps(
            ses.delivery("f-1", ["a@x.com"], T + 9), ses.open_("f-1", ["a@x.com"], T + 99), sep=b""
        ),
    ]
    response = await harness.client.post(
        "/v1/ingest/firehose",
        content=firehose_body(records),
        headers={"X-Amz-Firehose-Request-Id": "req-1", "X-Amz-Firehose-Protocol-Version": "1.0"},
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["requestId"] == "req-1" and isinstance(answer["timestamp"], int)
    assert "errorMessage" not in answer
    assert (await harness.runtime.store.get("f-1")).status() == "delivered"


async def test_firehose_gzip_and_retries(harness: Harness) -> None:
    body = gzip.compress(firehose_body([ses.dumps(ses.send("f-2", ["a@x.com"]))], "req-2"))
    headers = {"Content-Encoding": "gzip"}
    assert (
        await harness.client.post("/v1/ingest/firehose", content=body, headers=headers)
    ).status_code == 200
    assert (
        await harness.client.post("/v1/ingest/firehose", content=body, headers=headers)
    ).status_code == 200
    assert harness.runtime.pipeline.counters["firehose"].records == 1  # the retry was skipped


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"nope", "not JSON"),
        (orjson.dumps({"requestId": "r", "records": "x"}), "records must be a list"),
        (orjson.dumps({"requestId": "r", "records": [{"data": "%%%"}]}), "not base64"),
        (orjson.dumps({"records": []}), "requestId missing"),
    ],
)
async def test_malformed_firehose_requests_are_400_with_error_message(
    harness: Harness, body: bytes, needle: str
) -> None:
    response = await harness.client.post("/v1/ingest/firehose", content=body)
    assert response.status_code == 400
    assert needle in response.json()["errorMessage"]


async def test_firehose_access_key_is_checked() -> None:
    async for harness in harness_for(open_settings(firehose_access_key="fh-key")):
        body = firehose_body([ses.dumps(ses.send("f-3", ["a@x.com"]))], "req-3")
        wrong = await harness.client.post(
            "/v1/ingest/firehose",
            content=body,
            headers={"X-Amz-Firehose-Access-Key": "nope", "X-Amz-Firehose-Request-Id": "req-3"},
        )
        assert wrong.status_code == 401
        assert wrong.json()["requestId"] == "req-3" and wrong.json()["errorMessage"]
        right = await harness.client.post(
            "/v1/ingest/firehose", content=body, headers={"X-Amz-Firehose-Access-Key": "fh-key"}
        )
        assert right.status_code == 200


async def test_firehose_store_outage_is_retryable() -> None:
    settings = open_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async for harness in harness_for(settings):
        body = firehose_body([ses.dumps(ses.send("f-4", ["a@x.com"]))], "req-4")
        response = await harness.client.post("/v1/ingest/firehose", content=body)
        assert response.status_code == 503
        assert (
            response.json()["requestId"] == "req-4" and "retry" in response.json()["errorMessage"]
        )


# --- SNS end to end: moto's server signs (SignatureVersion 2) and POSTs to us ------


async def test_moto_sns_delivers_signed_notifications_over_http(moto_server: MotoServer) -> None:
    async def from_moto(url: str) -> bytes:
        # The same path, served by moto instead of the real SNS host. moto's server
        # picks the service from the credential scope of a SigV4 header.
        path = url.removeprefix("https://").split("/", 1)[1]
        scope = "AWS4-HMAC-SHA256 Credential=testing/20231114/us-east-1/sns/aws4_request"
        headers = {"Authorization": f"{scope}, SignedHeaders=host, Signature=0"}
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{moto_server.url}/{path}", headers=headers)
            response.raise_for_status()
            return response.content

    holder: dict[str, Runtime] = {}

    def on_start(runtime: Runtime) -> None:
        runtime.sns_verifier = SnsVerifier(fetch=from_moto)
        holder["runtime"] = runtime

    port = free_port()
    app = create_app(Settings(_env_file=None, port=port, sns_topic_arns="*"), on_start=on_start)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.to_thread(wait_for_port, port)
        async with get_session().create_client(
            "sns", endpoint_url=moto_server.url, region_name="us-east-1"
        ) as sns:
            topic = (await sns.create_topic(Name="ses-e2e"))["TopicArn"]
            await sns.subscribe(
                TopicArn=topic, Protocol="http", Endpoint=f"http://127.0.0.1:{port}/v1/ingest/sns"
            )
            record: dict[str, Any] = ses.bounce("moto-1", ["a@x.com"], T + 50)
            await sns.publish(TopicArn=topic, Message=orjson.dumps(record).decode())
        runtime = holder["runtime"]
        async with asyncio.timeout(15):
            while await runtime.store.get("moto-1") is None:  # noqa: ASYNC110 - moto posts from its thread
                await asyncio.sleep(0.1)
        assert (await runtime.store.get("moto-1")).status() == "bounced"
        assert runtime.pipeline.counters["sns"].events == 1
    finally:
        server.should_exit = True
        await serving
