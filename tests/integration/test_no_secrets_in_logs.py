"""7. No secret in any log line at any level: every path run with known secrets,
uvicorn's own lines included, and the captured log searched for each one."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import quote

import httpx
import orjson
import pytest
import websockets

from tests.support import ses
from tests.support.process import running
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

API_TOKEN = "tok-Zq81-api-secret/+=-0123456789"
FIREHOSE_KEY = "fh-key-9f8e7d6c5b-4a3b2c1d0e"
WEBHOOK_SECRET = "whsec-0123456789abcdef"
WEBHOOK_PATH = "/services/T000/B000/slack-secret-path-42"
REDIS_PASSWORD = "redis-pass-6d5c4b"
AWS_SECRET = "aws-secret-key-1a2b3c4d5e"
WRONG_TOKEN = "someone-elses-token-77"  # a wrong token can still be a secret


def variants(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), orjson.dumps(secret).decode()[1:-1]}


def test_no_log_line_holds_a_secret() -> None:
    sink_port = free_port()  # nothing listens: every alert post fails and is logged
    env = {
        "SES_TRACKER_LOG_LEVEL": "debug",
        "SES_TRACKER_API_TOKEN": API_TOKEN,
        "SES_TRACKER_FIREHOSE_ACCESS_KEY": FIREHOSE_KEY,
        "SES_TRACKER_SNS_TOPIC_ARNS": "*",
        "SES_TRACKER_ALERT_WEBHOOKS": f"slack=http://127.0.0.1:{sink_port}{WEBHOOK_PATH}",
        "SES_TRACKER_ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # A Redis that is not there: every store error is logged, with its URL.
        "SES_TRACKER_REDIS_URL": f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "SES_TRACKER_SQS_QUEUE_URLS": f"http://127.0.0.1:{free_port()}/123456789012/q",
        "SES_TRACKER_AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    with running("serve", env=env) as service:
        asyncio.run(exercise(service.base))
        service.stop()
        logs = service.logs()
    assert "websocket" in logs.lower() or "WebSocket" in logs  # uvicorn's lines are there
    for secret in (
        API_TOKEN,
        FIREHOSE_KEY,
        WEBHOOK_SECRET,
        WEBHOOK_PATH,
        REDIS_PASSWORD,
        AWS_SECRET,
        WRONG_TOKEN,
    ):
        for form in variants(secret):
            assert form not in logs, f"{secret!r} logged as {form!r}"


async def exercise(base: str) -> None:
    ws = base.replace("http://", "ws://")
    good = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        await http.get("/", params={"token": API_TOKEN})
        await http.get("/", params={"token": WRONG_TOKEN})
        await http.get("/v1/messages/m-1", headers=good)
        await http.get("/v1/messages/m-1", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        basic = base64.b64encode(f"user:{WRONG_TOKEN}".encode()).decode()
        await http.get("/v1/stats", headers={"Authorization": f"Basic {basic}"})
        await http.get("/v1/stats", params={"token": API_TOKEN})
        await http.get("/readyz", headers=good)
        await http.get("/metrics", headers=good)
        await http.post(
            "/v1/events", content=ses.dumps(ses.reject("r-1", ["a@x.com"])), headers=good
        )
        await http.post(
            "/v1/ingest/firehose",
            content=b'{"requestId": "r", "records": []}',
            headers={"X-Amz-Firehose-Access-Key": FIREHOSE_KEY},
        )
        await http.post(
            "/v1/ingest/firehose",
            content=b"{}",
            headers={"X-Amz-Firehose-Access-Key": WRONG_TOKEN},
        )
    for token in (API_TOKEN, WRONG_TOKEN, quote(API_TOKEN, safe="")):
        try:
            async with websockets.connect(f"{ws}/v1/live?token={token}", open_timeout=5) as live:
                await asyncio.wait_for(live.recv(), 3)
        except (websockets.exceptions.WebSocketException, TimeoutError, OSError):
            pass
    await asyncio.sleep(2.5)  # the alert evaluator runs and its sender fails to post


# --- Strings from outside: never a whole log line's worth, never a token -------------

PERCENT_TOKEN = "pct-encoded-token-5e4d3c"  # sent as ?%74oken=, which the server reads as token


@pytest.fixture(scope="module")
def open_push_logs() -> str:
    """The log of a service whose SNS endpoint takes any topic, after a forged 1 MB
    TopicArn and tokens under a percent-encoded name, on HTTP and the websocket."""
    env = {
        "SES_TRACKER_LOG_LEVEL": "debug",
        "SES_TRACKER_API_TOKEN": API_TOKEN,
        "SES_TRACKER_SNS_TOPIC_ARNS": "*",
    }
    with running("serve", env=env) as service:
        asyncio.run(forge(service.base))
        service.stop()
        return service.logs()


async def forge(base: str) -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:" + "t" * 1_000_000
    message = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": topic,
        "Message": "{}",
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "AAAA",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem",
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        refused = await http.post("/v1/ingest/sns", content=orjson.dumps(message))
        assert refused.status_code == 403
        await http.get(f"/v1/stats?%74oken={PERCENT_TOKEN}")
        await http.get(f"/v1/stats?step=day&%54OKEN={PERCENT_TOKEN}")
    ws = base.replace("http://", "ws://")
    for query in (f"%74oken={PERCENT_TOKEN}", f"a=1&%2574oken={PERCENT_TOKEN}"):
        try:
            async with websockets.connect(f"{ws}/v1/live?{query}", open_timeout=5) as live:
                await asyncio.wait_for(live.recv(), 3)
        except (websockets.exceptions.WebSocketException, TimeoutError, OSError):
            pass


def test_a_forged_megabyte_topic_arn_is_logged_cut_to_a_short_line(open_push_logs: str) -> None:
    lines = open_push_logs.splitlines()
    [refused] = [line for line in lines if "sns_message_refused" in line]
    topic = orjson.loads(refused)["topic"]
    assert topic.startswith("arn:aws:sns:us-east-1:123456789012:ttt") and topic.endswith("…")
    assert len(topic) <= 257
    assert max(len(line) for line in lines) < 4_096


def test_a_percent_encoded_token_name_never_reaches_the_log(open_push_logs: str) -> None:
    assert "WebSocket /v1/live" in open_push_logs  # uvicorn's websocket lines are there
    for form in variants(PERCENT_TOKEN):
        assert form not in open_push_logs, f"logged as {form!r}"
    # The websocket's request lines carry no query at all.
    for line in open_push_logs.splitlines():
        if "WebSocket /v1/live" in line:
            assert "/v1/live?" not in line
