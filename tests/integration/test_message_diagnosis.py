"""``GET /v1/messages/{id}``: each recipient's diagnosis and suppression, the
suppressions read in one batch (memory, one Redis, a cluster's slot groups)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from service.clock import wall_clock_ms
from service.settings import Settings
from service.stores import MemoryStore, RedisStore
from tests.support import ses
from tests.support.redis import RedisTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MID = "0100018b-diag-0000-0000-000000000000-000000"


@pytest.fixture(params=["memory", "single", "cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(_env_file=None, cache_ttl_s=0)
    if request.param != "memory":
        target = RedisTarget.of(request.param, request)
        await target.flush()
        settings = Settings(_env_file=None, cache_ttl_s=0, **target.settings())
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every suppression read the route asks a store for, by kind (not the reads a
    batch makes inside the store: an in-process store may loop over its dict)."""
    made: list[str] = []
    inside = [0]
    for cls in (MemoryStore, RedisStore):
        one, batch = cls.suppression, cls.suppressions_of

        async def counted_one(self, address, _one=one):
            if not inside[0]:
                made.append("one")
            return await _one(self, address)

        async def counted_batch(self, addresses, _batch=batch):
            made.append("batch")
            inside[0] += 1
            try:
                return await _batch(self, addresses)
            finally:
                inside[0] -= 1

        monkeypatch.setattr(cls, "suppression", counted_one)
        monkeypatch.setattr(cls, "suppressions_of", counted_batch)
    return made


async def test_the_seed_bounce_reads_as_a_diagnosis_with_its_suppression(
    client: httpx.AsyncClient, seeds_dir: Path, reads: list[str]
) -> None:
    # Dated now: suppressions are kept 400 days from their own time.
    now = wall_clock_ms()
    records = [
        ses.send(MID, ["gone@x.com", "fine@y.com", "later@z.com", "g@gmail.com"], sent_at=now),
        ses.bounce(MID, ["gone@x.com"], now + 1_200, sent_at=now, subtype="NoEmail"),
        ses.delivery(MID, ["fine@y.com"], now + 800, sent_at=now),
    ]
    assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202
    reads.clear()
    body = (await client.get(f"/v1/messages/{MID}")).json()
    assert reads == ["batch"]  # one read for all three recipients
    by_address = {r["address"]: r for r in body["recipients"]}
    gone, fine, later = (by_address[a] for a in ("gone@x.com", "fine@y.com", "later@z.com"))
    assert gone["diagnosis"]["code"] == "bounce.permanent.no_email"
    assert "1.2 s after sending" in gone["diagnosis"]["summary"]
    assert gone["diagnosis"]["action"]
    assert gone["suppressed"]["reason"] == "bounce"
    assert gone["suppressed"]["message_id"] == MID
    assert set(gone["suppressed"]) == {"reason", "since", "message_id"}
    assert fine["diagnosis"]["code"] == "delivered" and fine["suppressed"] is None
    assert later["diagnosis"]["code"] == "pending" and later["suppressed"] is None
    assert gone["provider"] == fine["provider"] == "other"
    assert by_address["g@gmail.com"]["provider"] == "gmail"

    # The seed's own bounce (2016): diagnosed alike, its suppression long expired.
    seed = (seeds_dir / "bounce_notification.json").read_bytes()
    assert (await client.post("/v1/events", content=seed)).status_code == 202
    found = await client.get(
        "/v1/messages/00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000"
    )
    [jane] = [r for r in found.json()["recipients"] if r["address"] == "jane@example.com"]
    assert jane["diagnosis"]["code"] == "bounce.permanent.general"
    assert "User not found" in jane["diagnosis"]["summary"]
    assert jane["suppressed"] is None


async def test_the_openapi_schema_publishes_the_diagnosis(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    recipient = schemas["RecipientView"]
    assert {"diagnosis", "suppressed"} <= set(recipient["required"])
    assert set(schemas["Diagnosis"]["required"]) == {"code", "summary", "action"}
