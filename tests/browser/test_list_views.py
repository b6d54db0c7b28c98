"""#27: the suppression list and alert history as views of the page: filter by
reason, remove with a confirmation (not offered to read sessions), alerts with
their figures and clickable example messages; usable at 400 px."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from service.settings import Settings
from tests.browser.test_message_page import READ_TOKEN, WRITE_TOKEN, launch, sign_in
from tests.browser.test_search_view import no_page_scroll
from tests.browser.test_status_page import ARTIFACTS
from tests.support import ses
from tests.support.serving import serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def traffic(now: int) -> list[dict]:
    """Two suppressions (a hard bounce, a complaint) among mail enough for the rule."""
    sent = now - 60_000
    records = [ses.send(f"0100018d-list-{n:02}", [f"r{n}@x.com"], sent) for n in range(20)]
    records += [
        ses.bounce("0100018d-list-00", ["r0@x.com"], now - 5_000, "Permanent", sent_at=sent),
        ses.complaint("0100018d-list-01", ["r1@x.com"], now - 4_000),
    ]
    return records


async def test_suppressions_and_alerts_are_views_of_the_page(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "timing:\n  evaluate_every_s: 0.5\n  group_wait_s: 0\nrules:\n"
        "  - name: bounces\n    kind: bounce_rate\n    window_s: 3600\n"
        "    warn: 0.02\n    min_sent: 10\n"
    )
    settings = Settings(
        _env_file=None,
        api_token=WRITE_TOKEN,
        read_tokens=f"support:{READ_TOKEN}",
        alert_rules=rules,
        suppression_days=400,
    )
    async with serving(settings) as server, async_playwright() as p:
        headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.base, headers=headers) as client:
            body = ses.dumps(*traffic(int(time.time() * 1000)))
            assert (await client.post("/v1/events", content=body)).status_code == 202
            for _ in range(100):
                if (await client.get("/v1/alerts")).json()["firing"]:
                    break
                await asyncio.sleep(0.1)
        browser = await launch(p)
        writer = await sign_in(await browser.new_context(), server.base, WRITE_TOKEN)
        # Suppressions: both, then by reason; a removal asks first.
        await writer.click("#open-suppressions")
        await expect(writer.locator("#suppressions-count")).to_have_text(
            "2 address(es)", timeout=5_000
        )
        await writer.select_option("#suppressions-reason", "bounce")
        await expect(writer).to_have_url(f"{server.base}/?suppressions=1&reason=bounce")
        await expect(writer.locator("#suppressions-count")).to_have_text("1 address(es)")
        rows = writer.locator("#suppressions tr")
        await expect(rows.nth(1)).to_contain_text("r0@x.com")
        ARTIFACTS.mkdir(exist_ok=True)
        await writer.screenshot(path=str(ARTIFACTS / "suppressions-1400.png"), full_page=True)
        asked: list[str] = []

        async def accept(dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        writer.on("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))
        await rows.nth(1).locator(".remove-suppression").click()
        await expect(rows.nth(1)).to_contain_text("Removed from the suppression list.")
        assert asked == ["Make r0@x.com safe to mail again?"]
        async with httpx.AsyncClient(base_url=server.base, headers=headers) as client:
            left = (await client.get("/v1/suppressions")).json()["items"]
        assert [item["address"] for item in left] == ["r1@x.com"]
        # Alerts: what fires, with its figures and example messages to click.
        await writer.click("#open-alerts")
        firing = writer.locator("#alerts-firing .alert-card")
        await expect(firing.first).to_contain_text("Bounce rate", timeout=5_000)
        await expect(firing.first.locator("dl")).to_contain_text("bounce rate")
        example = firing.first.locator("td.mid a").first
        await expect(example).to_have_text("0100018d-list-00")
        await writer.screenshot(path=str(ARTIFACTS / "alerts-1400.png"), full_page=True)
        await example.click()
        await expect(writer).to_have_url(f"{server.base}/?message=0100018d-list-00")
        # A read session sees the list, not the control that changes it; at 400 px
        # the tables scroll inside their panels, not the page.
        reader_context = await browser.new_context(viewport={"width": 400, "height": 900})
        reader = await sign_in(reader_context, server.base, READ_TOKEN)
        await reader.goto(f"{server.base}/?suppressions=1")
        await expect(reader.locator("#suppressions-count")).to_have_text("1 address(es)")
        assert await reader.locator(".remove-suppression").count() == 0
        assert await no_page_scroll(reader)
        await reader.screenshot(path=str(ARTIFACTS / "suppressions-400.png"), full_page=True)
        await reader.goto(f"{server.base}/?alerts=1")
        await expect(reader.locator("#alerts-firing .alert-card").first).to_be_visible()
        assert await no_page_scroll(reader)
        await reader.screenshot(path=str(ARTIFACTS / "alerts-400.png"), full_page=True)
        await browser.close()
