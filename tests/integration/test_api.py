"""The HTTP API in-process (ASGI transport, real lifespan), memory and Redis stores."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis import asyncio as aioredis

from api.app import create_app
from service.clock import wall_clock_ms
from service.settings import Settings
from service.timestamps import format_ms
from tests.support import ses
from tests.support.redis import RedisTarget
from tests.support.servers import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MID = "0100018b-api-0000-0000-000000000000-000000"
T = ses.SENT_AT


async def client_for(
    settings: Settings, clock_ms: Callable[[], int] = wall_clock_ms
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock_ms=clock_ms)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture(params=["memory", "redis"])
async def client(request, redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = redis_server.url if request.param == "redis" else None
    if redis_url:
        # The service's own key prefix: start each test from an empty database.
        flusher = aioredis.Redis.from_url(redis_url)
        await flusher.flushdb()
        await flusher.aclose()
    async for c in client_for(Settings(_env_file=None, redis_url=redis_url, cache_ttl_s=0)):
        yield c


async def test_post_then_lookup(client: httpx.AsyncClient, seeds_dir: Path) -> None:
    body = (seeds_dir / "bounce_notification.json").read_bytes()
    response = await client.post("/v1/events", content=body)
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1,
        "rejected": 0,
        "ignored": 0,
        "errors": [],
        "error_codes": {},
        "notes": [],
    }
    found = await client.get(
        "/v1/messages/00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000"
    )
    assert found.status_code == 200
    message = found.json()
    assert message["status"] == "bounced"
    assert message["recipients"][0]["bounce"]["type"] == "Permanent"
    assert message["events"][0]["type"] == "bounce"


async def test_full_lifecycle_over_http(client: httpx.AsyncClient) -> None:
    records = [
        ses.sns(ses.send(MID, ["a@x.com", "b@y.com"])),
        ses.eventbridge(ses.delivery(MID, ["a@x.com"], T + 1_200)),
        ses.delay(MID, ["b@y.com"], T + 3_000),
    ]
    response = await client.post("/v1/events", content=ses.dumps(*records))
    assert response.json()["accepted"] == 3
    message = (await client.get(f"/v1/messages/{MID}")).json()
    assert message["status"] == "delivered"
    assert {r["address"]: r["status"] for r in message["recipients"]} == {
        "a@x.com": "delivered",
        "b@y.com": "delayed",
    }
    assert message["latency_ms"]["send_to_delivery"] == 1_200
    assert message["sent_at"] == "2023-11-14T22:13:20.000Z"
    assert [e["type"] for e in message["events"]] == ["send", "delivery", "delivery_delay"]


async def test_partial_errors_are_listed_and_the_rest_accepted(client: httpx.AsyncClient) -> None:
    body = b"\n".join([ses.dumps(ses.send(MID, ["a@x.com"])), b"{broken", b'{"eventType":"Zap"}'])
    response = await client.post("/v1/events", content=body)
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 2)
    assert [e["index"] for e in answer["errors"]] == [1, 2]
    assert "invalid JSON" in answer["errors"][0]["error"]


async def test_nothing_readable_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", content=b"not json at all")
    assert response.status_code == 400
    assert response.json()["rejected"] == 1


async def test_records_without_state_are_202_with_notes(client: httpx.AsyncClient) -> None:
    body = orjson.dumps({"Type": "SubscriptionConfirmation", "TopicArn": "t", "Message": "x"})
    response = await client.post("/v1/events", content=body)
    assert response.status_code == 202
    assert response.json()["ignored"] == 1
    assert "SubscriptionConfirmation" in response.json()["notes"][0]["reason"]


async def test_unknown_message_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/messages/never-sent")
    assert response.status_code == 404
    assert "never-sent" in response.json()["error"]


async def test_gzip_body_is_accepted(client: httpx.AsyncClient) -> None:
    body = gzip.compress(ses.dumps(ses.send(MID, ["a@x.com"])))
    response = await client.post("/v1/events", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 202 and response.json()["accepted"] == 1


async def test_body_size_limits() -> None:
    async for client in client_for(Settings(_env_file=None, max_body_bytes=1_000)):
        big = await client.post("/v1/events", content=b" " * 1_001)
        assert big.status_code == 413
        assert "limit" in big.json()["error"]

        async def chunks():
            for _ in range(5):
                yield b" " * 300

        streamed = await client.post("/v1/events", content=chunks())
        assert streamed.status_code == 413
        bomb = gzip.compress(b" " * 100_000)
        assert len(bomb) < 1_000
        inflated = await client.post(
            "/v1/events", content=bomb, headers={"Content-Encoding": "gzip"}
        )
        assert inflated.status_code == 413
        bad_gzip = await client.post(
            "/v1/events", content=b"xx", headers={"Content-Encoding": "gzip"}
        )
        assert bad_gzip.status_code == 400


async def test_ten_megabyte_body_is_413() -> None:
    async for client in client_for(Settings(_env_file=None)):
        response = await client.post("/v1/events", content=b" " * (10 * 1024 * 1024))
        assert response.status_code == 413


async def test_api_token_guards_v1_but_not_health() -> None:
    async for client in client_for(Settings(_env_file=None, api_token="s3cret-token")):
        assert (await client.get(f"/v1/messages/{MID}")).status_code == 401
        wrong = await client.get(f"/v1/messages/{MID}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        basic = await client.get(
            f"/v1/messages/{MID}", headers={"Authorization": "Basic s3cret-token"}
        )
        assert basic.status_code == 401
        auth = {"Authorization": "Bearer s3cret-token"}
        assert (await client.post("/v1/events", content=b"[]", headers=auth)).status_code == 400
        assert (await client.get(f"/v1/messages/{MID}", headers=auth)).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["store"] is True


async def test_store_outage_is_503_and_not_ready() -> None:
    settings = Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async for client in client_for(settings):
        response = await client.post("/v1/events", content=ses.dumps(ses.send(MID, ["a@x.com"])))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert (await client.get(f"/v1/messages/{MID}")).status_code == 503
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200


async def test_a_broker_outage_keeps_lookups_in_service_and_hides_details() -> None:
    """Readiness follows the store only; failure texts need the token."""
    settings = Settings(
        _env_file=None,
        api_token="ready-secret",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        sqs_queue_urls=f"http://127.0.0.1:{free_port()}/123456789012/secret-queue",
    )
    async for client in client_for(settings):
        async with asyncio.timeout(20):
            while True:
                ready = await client.get("/readyz")
                consumers = ready.json()["consumers"]
                if all(c["failure"] for c in consumers.values()):
                    break
                await asyncio.sleep(0.2)
        assert ready.status_code == 200 and ready.json()["sources_healthy"] is False
        assert "secret-queue" not in ready.text and "123456789012" not in ready.text
        detailed = await client.get("/readyz", headers={"Authorization": "Bearer ready-secret"})
        assert detailed.status_code == 200
        assert "kafka" in detailed.json()["consumers"]["kafka"]["failure"]


async def test_an_account_event_is_not_acknowledged_while_the_store_is_down() -> None:
    """9. Sending Status Disabled is stored before the answer; with Redis down, 503."""
    settings = Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    event = ses.eventbridge_account("Sending Status Disabled", int(time.time() * 1000))
    async for client in client_for(settings):
        response = await client.post("/v1/events", content=orjson.dumps(event))
        assert response.status_code == 503
        assert response.json() == {"error": "state store unavailable, retry later"}


async def redis_settings(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for the store ``kind`` names, emptied first: none for memory."""
    if kind == "memory":
        return {}
    target = RedisTarget.of(kind, request)
    await target.flush()
    return target.settings()


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
async def test_stats_over_a_window(kind: str, request: pytest.FixtureRequest) -> None:
    # Statistics count by event time, the last hour of it: a clock near the events.
    redis = await redis_settings(kind, request)
    settings = Settings(_env_file=None, cache_ttl_s=0, **redis)
    async for client in client_for(settings, ses.clock_from(T + 10_000)):
        await stats_over_a_window(client)


async def stats_over_a_window(client: httpx.AsyncClient) -> None:
    records = [
        ses.send(MID + "s", ["a@gmail.com", "b@yahoo.com"]),
        ses.delivery(MID + "s", ["a@gmail.com"], T + 2_000),
        ses.bounce(MID + "s", ["b@yahoo.com"], T + 5_000),
    ]
    await client.post("/v1/events", content=ses.dumps(*records))
    response = await client.get("/v1/stats", params={"window_s": 60})
    assert response.status_code == 200
    body = response.json()
    assert body["window_s"] == 60
    assert body["counts"]["sent"] == 2
    assert body["counts"]["delivered"] == 1 and body["counts"]["bounced"] == 1
    assert body["rates"]["bounce"] == 0.5
    delivery = body["latency_ms"]["send_to_delivery"]
    assert delivery["count"] == 1 and abs(delivery["p50"] - 2_000) <= 20
    assert body["by_domain"]["yahoo.com"]["counts"]["bounced"] == 1
    for bad in (0, 5, 3_601):
        assert (await client.get("/v1/stats", params={"window_s": bad})).status_code == 422


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
async def test_breakdowns_by_dimension_and_history(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """#14: /v1/stats?by= any dimension, /v1/history by hour and day, old events in
    history only."""
    redis = await redis_settings(kind, request)
    day = 86_400_000
    now = T + 3 * day
    settings = Settings(_env_file=None, cache_ttl_s=0, tag_dimensions="team", **redis)
    old = [ses.send(MID + "old", ["a@gmail.com"]), ses.bounce(MID + "old", ["a@gmail.com"], T + 9)]
    recent = []
    for n, (address, config) in enumerate(
        [("b@hotmail.com", "news"), ("c@outlook.com", "news"), ("d@corp.example", "receipts")]
    ):
        send = ses.send(MID + f"r{n}", [address], now - 60_000)
        send["mail"]["tags"]["ses:configuration-set"] = [config]
        delivery = ses.delivery(MID + f"r{n}", [address], now - 58_000, now - 60_000)
        delivery["mail"] = send["mail"]  # one message, one mail object
        recent += [send, delivery]
    async for client in client_for(settings, ses.clock_from(now)):
        assert (
            await client.post("/v1/events", content=ses.dumps(*old, *recent))
        ).status_code == 202
        body = (await client.get("/v1/stats", params={"by": "provider"})).json()
        # The three-day-old message is history only: live figures hold the recent three.
        assert body["counts"]["sent"] == 3 and body["counts"]["bounced"] == 0
        groups = {g["key"]: g["counts"] for g in body["by"]["groups"]}
        assert body["by"]["dimension"] == "provider"
        assert groups == {
            "microsoft": {**groups["microsoft"], "sent": 2, "delivered": 2},
            "other": {**groups["other"], "sent": 1, "delivered": 1},
        }
        body = (await client.get("/v1/stats", params={"by": "configuration_set"})).json()
        assert [(g["key"], g["counts"]["sent"]) for g in body["by"]["groups"]] == [
            ("news", 2),
            ("receipts", 1),
        ]
        body = (await client.get("/v1/stats", params={"by": "tag:team"})).json()
        assert [(g["key"], g["counts"]["sent"]) for g in body["by"]["groups"]] == [("orders", 3)]
        for bad in ("tag:nope", "recipient", "x" * 200):
            response = await client.get("/v1/stats", params={"by": bad})
            assert response.status_code == 422, bad
            assert "error" in response.json()

        # Daily history: the old day holds the bounce, today the three sends.
        history = (await client.get("/v1/history", params={"step": "day"})).json()
        assert history["step"] == "day" and history["by"] is None
        assert history["history_days"] == 400 and history["hourly_days"] == 31
        days = {p["at"]: p for p in history["points"]}
        assert {p["key"] for p in days.values()} == {"(all)"}
        first = days[format_ms(T // day * day)]
        assert first["counts"]["sent"] == 1 and first["rates"]["bounce"] == 1.0
        assert sum(p["counts"]["sent"] for p in days.values()) == 4
        by_config = (
            await client.get("/v1/history", params={"step": "day", "by": "configuration_set"})
        ).json()
        keys = {(p["at"], p["key"]): p["counts"]["sent"] for p in by_config["points"]}
        assert keys[(format_ms(T // day * day), "transactional")] == 1
        assert keys[(format_ms((now - 60_000) // day * day), "news")] == 2
        top_one = (
            await client.get(
                "/v1/history", params={"step": "day", "by": "configuration_set", "top": 1}
            )
        ).json()
        assert {p["key"] for p in top_one["points"]} == {"news", "(other)"}
        hours = (
            await client.get(
                "/v1/history",
                params={
                    "step": "hour",
                    "since": format_ms(now - 3_600_000),
                    "until": format_ms(now),
                },
            )
        ).json()
        assert [p["counts"]["delivered"] for p in hours["points"]] == [3]
        delivery = hours["points"][0]["latency_ms"]["send_to_delivery"]
        # History sketches are coarser than live ones: within 5%.
        assert delivery["count"] == 3 and abs(delivery["p50"] - 2_000) <= 2_000 * 0.05
        for params in (
            {"step": "hour", "since": format_ms(now - 40 * day)},
            {"step": "week"},
            {"since": format_ms(now), "until": format_ms(now - day)},
            {"by": "tag:nope"},
        ):
            response = await client.get("/v1/history", params=params)
            assert response.status_code == 422, params


async def test_search_filters_by_dimension_and_exports_every_match(
    client: httpx.AsyncClient,
) -> None:
    """#14: search takes the dimensions; format=csv|ndjson streams every match, with
    spreadsheet formulas defused."""
    records = []
    for n in range(1_200):  # more than one page of the export's search (500)
        address = [f"u{n}@gmail.com", f"u{n}@hotmail.com", f"u{n}@corp.example"][n % 3]
        send = ses.send(f"0100018b-exp-{n:05d}", [address], T + n)
        send["mail"]["tags"]["ses:configuration-set"] = ["news" if n % 2 else "receipts"]
        send["mail"]["tags"]["campaign"] = [f"c{n % 4}"]
        send["mail"]["commonHeaders"]["subject"] = '=HYPERLINK("http://evil")' if n == 7 else "Hi"
        records.append(send)
    records.append(ses.bounce("0100018b-exp-00004", ["u4@hotmail.com"], T + 50, "Permanent"))
    records.append(ses.bounce("0100018b-exp-00005", ["u5@corp.example"], T + 50, "Transient"))
    response = await client.post("/v1/events", content=ses.dumps(*records))
    assert response.json()["accepted"] == len(records)

    async def ids(**params: str) -> set[str]:
        found: set[str] = set()
        cursor = None
        while True:
            page = (
                await client.get(
                    "/v1/messages",
                    params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})},
                )
            ).json()
            found |= {item["message_id"] for item in page["items"]}
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    assert len(await ids(configuration_set="news")) == 600
    assert len(await ids(provider="microsoft")) == 400
    assert len(await ids(domain="Corp.Example")) == 400
    assert len(await ids(tag="campaign:c1", configuration_set="news")) == 300
    assert await ids(tag="campaign:c9") == set()
    assert await ids(identity="shop.example", configuration_set="(none)") == set()
    assert await ids(bounce_type="Permanent") == {"0100018b-exp-00004"}
    assert await ids(bounce_type="Transient", status="bounced") == {"0100018b-exp-00005"}
    for bad in (
        {"provider": "aol"},
        {"bounce_type": "Soft"},
        {"tag": "novalue"},
        {"format": "xml"},
    ):
        assert (await client.get("/v1/messages", params=bad)).status_code == 422, bad

    response = await client.get("/v1/messages", params={"format": "ndjson"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.content.splitlines()
    assert (
        len(lines) == 1_200 and len({orjson.loads(line)["message_id"] for line in lines}) == 1_200
    )

    response = await client.get(
        "/v1/messages", params={"format": "csv", "configuration_set": "news", "limit": 1}
    )
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    import csv
    import io

    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:5] == ["message_id", "sent_at", "status", "recipient", "recipient_status"]
    assert len(rows) == 1 + 600  # limit does not apply to an export
    subjects = {row[0]: row[-1] for row in rows[1:]}
    assert subjects["0100018b-exp-00007"] == '\'=HYPERLINK("http://evil")'
    assert {row[6] for row in rows[1:]} == {"shop.example"}  # identity


async def test_a_recipient_profile(client: httpx.AsyncClient, monkeypatch) -> None:
    """#15: what we sent an address and what became of it, and whether mailing it
    again is unsafe."""
    from service import profile

    # Dated now: suppressions are kept 400 days from their own time.
    T = wall_clock_ms() - 600_000
    who = ["Shopper@Example.com"]
    records = [
        ses.send("0100018b-prof-1", who, T),
        ses.delivery("0100018b-prof-1", who, T + 700, T),
        ses.send("0100018b-prof-2", who, T + 1_000),
        ses.bounce("0100018b-prof-2", who, T + 1_500, "Transient", sent_at=T + 1_000),
        ses.send("0100018b-prof-3", who, T + 2_000),
        ses.delivery("0100018b-prof-3", who, T + 2_600, T + 2_000),
        ses.complaint("0100018b-prof-3", who, T + 9_000, sent_at=T + 2_000),
        ses.send("0100018b-prof-4", ["other@x.com"], T + 3_000),
    ]
    assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202
    response = await client.get("/v1/recipients/shopper@EXAMPLE.com")
    assert response.status_code == 200
    body = response.json()
    assert body["address"] == "shopper@example.com"
    assert (body["messages"], body["complete"]) == (3, True)
    assert body["first_sent_at"] == format_ms(T) and body["last_sent_at"] == format_ms(T + 2_000)
    counts = body["status_counts"]
    assert (counts["delivered"], counts["bounced"], counts["complained"]) == (1, 1, 1)
    assert body["last_outcome"] == {
        "status": "complained",
        "at": format_ms(T + 9_000),
        "message_id": "0100018b-prof-3",
    }
    # A soft bounce does not make an address unsafe; a complaint does.
    assert body["suppressed"] == {
        "reason": "complaint",
        "since": format_ms(T + 9_000),
        "message_id": "0100018b-prof-3",
    }
    assert [m["message_id"] for m in body["recent"]] == [f"0100018b-prof-{n}" for n in (3, 2, 1)]
    hard = [ses.bounce("0100018b-prof-5", ["gone@x.com"], T + 50, "Permanent")]
    assert (await client.post("/v1/events", content=ses.dumps(*hard))).status_code == 202
    gone = (await client.get("/v1/recipients/gone@x.com")).json()
    assert gone["suppressed"]["reason"] == "bounce"
    missing = await client.get("/v1/recipients/nobody@x.com")
    assert missing.status_code == 404 and "error" in missing.json()
    # A recipient of very many messages is read up to a bound, and says so.
    monkeypatch.setattr(profile, "MAX_MESSAGES", 2)
    capped = (await client.get("/v1/recipients/shopper@example.com")).json()
    assert (capped["messages"], capped["complete"]) == (2, False)


async def test_suppressions_are_listed_exported_and_removable(client: httpx.AsyncClient) -> None:
    """#15: Permanent bounces and complaints make addresses unsafe to mail again,
    remembered beyond the message retention, removable by hand."""
    t0 = wall_clock_ms() - 600_000
    records = [
        # A soft bounce, then a hard one: the status stays "bounced", the address
        # becomes unsafe all the same.
        ses.bounce("0100018b-sup-1", ["soft@x.com"], t0 + 10, "Transient", sent_at=t0),
        ses.bounce("0100018b-sup-2", ["soft@x.com"], t0 + 20, "Permanent", sent_at=t0),
        ses.complaint("0100018b-sup-3", ["angry@x.com"], t0 + 30, sent_at=t0),
        ses.bounce("0100018b-sup-4", ["=cmd@x.com"], t0 + 40, "Permanent", sent_at=t0),
        ses.bounce("0100018b-sup-5", ["fine@x.com"], t0 + 50, "Transient", sent_at=t0),
    ]
    # The same address complained about earlier, delivered late: the earliest wins.
    records.append(ses.complaint("0100018b-sup-6", ["soft@x.com"], t0 + 5, sent_at=t0))
    assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202
    body = (await client.get("/v1/suppressions")).json()
    listed = [(i["address"], i["reason"]) for i in body["items"]]
    assert listed == [("=cmd@x.com", "bounce"), ("angry@x.com", "complaint"),
                      ("soft@x.com", "complaint")]  # fmt: skip
    assert body["items"][0]["subtype"] == "General" and body["next_cursor"] is None
    bounces = (await client.get("/v1/suppressions", params={"reason": "bounce"})).json()
    assert [i["address"] for i in bounces["items"]] == ["=cmd@x.com"]
    recent = await client.get("/v1/suppressions", params={"since": format_ms(t0 + 25)})
    assert [i["address"] for i in recent.json()["items"]] == ["=cmd@x.com", "angry@x.com"]
    first = (await client.get("/v1/suppressions", params={"limit": 2})).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = (
        await client.get("/v1/suppressions", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [i["address"] for i in rest["items"]] == ["soft@x.com"] and rest["next_cursor"] is None
    csv_text = (await client.get("/v1/suppressions", params={"format": "csv"})).text
    assert csv_text.splitlines()[0] == "address,reason,since,message_id,subtype"
    assert csv_text.splitlines()[1].startswith("'=cmd@x.com,bounce,")  # a formula, defused
    # Removed by hand: safe again, and the profile says so.
    assert (await client.get("/v1/recipients/angry@x.com")).json()["suppressed"]["reason"] == (
        "complaint"
    )
    removed = await client.delete("/v1/suppressions/Angry@X.com")
    assert removed.status_code == 200 and removed.json() == {
        "address": "angry@x.com",
        "removed": True,
    }
    assert (await client.delete("/v1/suppressions/angry@x.com")).status_code == 404
    assert (await client.get("/v1/recipients/angry@x.com")).json()["suppressed"] is None
    for bad in ({"reason": "spam"}, {"cursor": "nope!"}, {"format": "xml"}, {"limit": 0}):
        assert (await client.get("/v1/suppressions", params=bad)).status_code == 422, bad


async def until_erased(client: httpx.AsyncClient, status_url: str) -> dict:
    """The job's progress once done (it runs in the background)."""
    async with asyncio.timeout(20):
        while True:
            progress = (await client.get(status_url)).json()
            if progress["status"] == "done":
                return progress
            await asyncio.sleep(0.02)


async def test_a_recipient_is_erased_everywhere(client: httpx.AsyncClient) -> None:
    """#15: a privacy request removes an address from every kept message, the search
    index, the profile and the suppression list; other recipients keep their data."""
    t0 = wall_clock_ms() - 600_000
    both = ["erase@x.com", "keep@x.com"]
    records = [
        ses.send("0100018b-era-1", both, t0),
        ses.delivery("0100018b-era-1", both, t0 + 800, t0),
        ses.bounce("0100018b-era-1", ["erase@x.com"], t0 + 900, "Permanent", sent_at=t0),
        ses.open_("0100018b-era-1", ["erase@x.com"], t0 + 5_000),
        ses.send("0100018b-era-2", ["erase@x.com"], t0 + 1_000),
    ]
    assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202
    before = (await client.get("/v1/messages/0100018b-era-1")).json()
    assert {r["address"] for r in before["recipients"]} == set(both)
    response = await client.delete("/v1/recipients/Erase@X.com")
    assert response.status_code == 202
    accepted = response.json()
    assert accepted == {
        "address": "erase@x.com",
        "id": accepted["id"],
        "status_url": f"/v1/erasures/{accepted['id']}",
    }
    assert response.headers["location"] == accepted["status_url"]
    progress = await until_erased(client, accepted["status_url"])
    assert progress["messages"] == 2 and progress["index_entries"] == 0
    assert progress["error"] is None
    assert "erase@x.com" not in str(progress)
    after = await client.get("/v1/messages/0100018b-era-1")
    assert "erase@x.com" not in after.text
    message = after.json()
    assert [r["address"] for r in message["recipients"]] == ["keep@x.com"]
    assert message["recipients"][0]["status"] == "delivered"
    assert [e["type"] for e in message["events"]] == ["send", "delivery"]
    assert "erase@x.com" not in (await client.get("/v1/messages/0100018b-era-2")).text
    found = await client.get("/v1/messages", params={"recipient": "erase@x.com"})
    assert found.json()["items"] == []
    assert (await client.get("/v1/recipients/erase@x.com")).status_code == 404
    assert "erase@x.com" not in (await client.get("/v1/suppressions")).text
    # A late event of a message sent before the erasure arrives without the address;
    # a message sent after it is new data.
    late = ses.delivery("0100018b-era-2", ["erase@x.com"], t0 + 2_000, t0 + 1_000)
    new = ses.send("0100018b-era-3", ["erase@x.com"], wall_clock_ms() + 1_000)
    assert (await client.post("/v1/events", content=ses.dumps(late, new))).status_code == 202
    assert "erase@x.com" not in (await client.get("/v1/messages/0100018b-era-2")).text
    profile = (await client.get("/v1/recipients/erase@x.com")).json()
    assert [m["message_id"] for m in profile["recent"]] == ["0100018b-era-3"]
    # Unknown and malformed job ids.
    assert (await client.get("/v1/erasures/nope")).status_code == 404
    assert (await client.get("/v1/erasures/not%20an%20id")).status_code == 422
    kept = (await client.get("/v1/recipients/keep@x.com")).json()
    assert kept["status_counts"]["delivered"] == 1


async def test_search_by_recipient_status_and_time_with_cursor(client: httpx.AsyncClient) -> None:
    records = []
    for n in range(5):
        mid = f"0100018b-search-{n}"
        records.append(ses.send(mid, ["Shopper@Example.com", f"other{n}@x.com"], T + n * 1000))
        if n % 2 == 0:
            records.append(
                ses.delivery(mid, ["Shopper@Example.com"], T + n * 1000 + 700, T + n * 1000)
            )
    records.append(
        ses.bounce("0100018b-search-3", ["Shopper@Example.com"], T + 3900, sent_at=T + 3000)
    )
    assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202

    response = await client.get(
        "/v1/messages", params={"recipient": "shopper@example.com", "limit": 2}
    )
    assert response.status_code == 200
    first = response.json()
    assert [item["message_id"] for item in first["items"]] == [
        "0100018b-search-4",
        "0100018b-search-3",
    ]
    item = first["items"][0]
    assert set(item) == {
        "message_id",
        "status",
        "overdue",
        "sent_at",
        "source",
        "subject",
        "configuration_set",
        "recipients",
    }
    assert item["sent_at"] == "2023-11-14T22:13:24.000Z"
    delivered = {"address": "shopper@example.com", "status": "delivered", "diagnosis": "delivered"}
    assert delivered in item["recipients"]
    assert first["next_cursor"]

    seen = [i["message_id"] for i in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = (
            await client.get(
                "/v1/messages",
                params={"recipient": "shopper@example.com", "limit": 2, "cursor": cursor},
            )
        ).json()
        seen += [i["message_id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [f"0100018b-search-{n}" for n in (4, 3, 2, 1, 0)]

    bounced = (await client.get("/v1/messages", params={"status": "bounced"})).json()
    assert [i["message_id"] for i in bounced["items"]] == ["0100018b-search-3"]
    assert bounced["next_cursor"] is None
    # With a recipient, status is that recipient's: other3 was never bounced.
    other = await client.get(
        "/v1/messages", params={"recipient": "other3@x.com", "status": "bounced"}
    )
    assert other.json()["items"] == []
    window = await client.get(
        "/v1/messages",
        params={"since": "2023-11-14T22:13:21Z", "until": "2023-11-14T22:13:23.000Z"},
    )
    assert [i["message_id"] for i in window.json()["items"]] == [
        "0100018b-search-2",
        "0100018b-search-1",
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "lost"},
        {"limit": "0"},
        {"limit": "501"},
        {"since": "yesterday"},
        {"cursor": "not-a-cursor"},
        {"cursor": "MTcwMDAwMDAwMDAwMC5zaG9ydA"},  # well-formed base64, wrong handle
    ],
)
async def test_bad_search_parameters_are_422(client: httpx.AsyncClient, params) -> None:
    response = await client.get("/v1/messages", params=params)
    assert response.status_code == 422, response.text


async def test_overdue_lists_messages_still_waiting_past_the_threshold(
    client: httpx.AsyncClient,
) -> None:
    # T is long past; a message sent "now" is not yet overdue.
    now = int(time.time() * 1000)
    records = [
        ses.send("0100018b-overdue-old", ["a@x.com"], T),
        ses.send("0100018b-overdue-new", ["a@x.com"], now),
        ses.send("0100018b-overdue-done", ["a@x.com"], T),
        ses.delivery("0100018b-overdue-done", ["a@x.com"], T + 50, T),
    ]
    assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202
    body = (await client.get("/v1/messages", params={"overdue": "true"})).json()
    assert [(i["message_id"], i["overdue"]) for i in body["items"]] == [
        ("0100018b-overdue-old", True)
    ]


async def test_answers_with_data_conform_to_the_declared_schemas(client: httpx.AsyncClient) -> None:
    """The response models are the contract in code: real answers, full of data, fit."""
    from api import schemas

    records = [
        ses.send(MID + "c", ["a@gmail.com", "b@yahoo.com", "c@x.com"]),
        ses.delivery(MID + "c", ["a@gmail.com"], T + 2_000),
        ses.bounce(MID + "c", ["b@yahoo.com"], T + 5_000, "Transient"),
        ses.delay(MID + "c", ["c@x.com"], T + 9_000),
        ses.complaint(MID + "c", ["a@gmail.com"], T + 60_000),
        ses.open_(MID + "c", ["a@gmail.com"], T + 70_000),
        ses.reject(MID + "r", ["d@x.com"]),
    ]
    ingest = await client.post("/v1/events", content=ses.dumps(*records) + b"\n{broken")
    schemas.IngestAnswer.model_validate(ingest.json())
    schemas.MessageView.model_validate((await client.get(f"/v1/messages/{MID}c")).json())
    schemas.SearchAnswer.model_validate((await client.get("/v1/messages?limit=5")).json())
    schemas.StatsAnswer.model_validate((await client.get("/v1/stats?window_s=60")).json())
    schemas.AlertsAnswer.model_validate((await client.get("/v1/alerts")).json())
    schemas.ReadyAnswer.model_validate((await client.get("/readyz")).json())
    schemas.HealthAnswer.model_validate((await client.get("/healthz")).json())
    for path in ("/v1/messages/nope", "/v1/messages?status=zap", "/nowhere"):
        schemas.ErrorAnswer.model_validate((await client.get(path)).json())
