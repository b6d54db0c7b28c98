"""#26 point 4: a recipient's profile does a bounded amount of work, however many
messages the recipient had (it built a message view for each of up to 2,000)."""

from __future__ import annotations

import pytest

from service import profile, view
from service.clock import wall_clock_ms
from service.settings import Settings
from service.timestamps import format_ms
from tests.integration.test_api import client_for
from tests.support import ses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_profile_views_one_message_and_summarizes_a_page(monkeypatch) -> None:
    views: list[str] = []
    summaries: list[str] = []
    real_view, real_summary = view.message_view, view.message_summary

    def counted_view(message_id, record, options):
        views.append(message_id)
        return real_view(message_id, record, options)

    def counted_summary(message_id, record, options):
        summaries.append(message_id)
        return real_summary(message_id, record, options)

    monkeypatch.setattr(profile, "message_view", counted_view)
    monkeypatch.setattr(profile, "message_summary", counted_summary)
    t0 = wall_clock_ms() - 3_600_000
    who = ["busy@x.com"]
    records = []
    for n in range(300):
        message_id = f"0100018b-busy-{n:03d}"
        records.append(ses.send(message_id, who, t0 + n * 1_000))
        if n % 3 == 0:
            records.append(ses.delivery(message_id, who, t0 + n * 1_000 + 500, t0 + n * 1_000))
        elif n % 3 == 1:
            records.append(
                ses.bounce(message_id, who, t0 + n * 1_000 + 500, "Transient", t0 + n * 1_000)
            )
    async for client in client_for(Settings(_env_file=None, cache_ttl_s=0)):
        assert (await client.post("/v1/events", content=ses.dumps(*records))).status_code == 202
        body = (await client.get("/v1/recipients/busy@x.com")).json()
    assert body["messages"] == 300 and body["complete"] is True
    counts = body["status_counts"]
    assert (counts["delivered"], counts["bounced"], counts["sent"]) == (100, 100, 100)
    assert body["last_outcome"] == {
        "status": "sent",
        "at": format_ms(t0 + 299_000),
        "message_id": "0100018b-busy-299",
    }
    assert [m["message_id"] for m in body["recent"]][:2] == [
        "0100018b-busy-299",
        "0100018b-busy-298",
    ]
    assert len(views) == 1
    assert len(summaries) == len(body["recent"]) == profile.RECENT
