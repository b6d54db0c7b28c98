"""#27: the search view: every filter the API takes, paged results with each
recipient's diagnosis code, export links that download the same rows, and the live
page's counters and breakdown rows opening the search for what they count."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from service.settings import Settings
from tests.browser.test_status_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM
from tests.support import ses
from tests.support.serving import serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def traffic(now: int) -> list[dict]:
    """Gmail bounces hard, Yahoo delivers: twelve messages in all."""
    records = []
    for n in range(6):
        mid = f"0100018b-search-g{n}"
        records += [ses.send(mid, [f"g{n}@gmail.com"], now - 60_000 + n),
                    ses.bounce(mid, [f"g{n}@gmail.com"], now - 30_000, "Permanent",
                               sent_at=now - 60_000 + n)]  # fmt: skip
        mid = f"0100018b-search-y{n}"
        sent_at = now - 50_000 + n
        records += [ses.send(mid, [f"y{n}@yahoo.com"], sent_at),
                    ses.delivery(mid, [f"y{n}@yahoo.com"], now - 20_000, sent_at)]  # fmt: skip
    return records


async def no_page_scroll(page) -> bool:
    return await page.evaluate(
        "document.scrollingElement.scrollWidth <= document.documentElement.clientWidth"
    )


async def test_the_search_view_filters_pages_exports_and_opens_from_the_live_page() -> None:
    assert HAVE_CHROMIUM, "install Debian's chromium (bash .ci/run does)"
    async with serving(Settings(_env_file=None)) as server, async_playwright() as p:
        async with httpx.AsyncClient(base_url=server.base) as client:
            body = ses.dumps(*traffic(int(time.time() * 1000)))
            assert (await client.post("/v1/events", content=body)).status_code == 202
            api_rows = (await client.get("/v1/messages", params={"domain": "gmail.com"})).json()
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(server.base + "/")
        # A breakdown row (recipient domain, live) opens the search for its group.
        row = page.locator("#breakdown tbody tr a", has_text="gmail.com")
        await expect(row).to_be_visible(timeout=10_000)
        await row.click()
        await expect(page).to_have_url(f"{server.base}/?search=1&domain=gmail.com")
        await expect(page.locator("#search-domain")).to_have_value("gmail.com")
        await expect(page.locator("#search-results .search-count")).to_have_text(
            "6 message(s)", timeout=5_000
        )
        shown = await page.locator("#search-results td.mid a").all_inner_texts()
        assert sorted(shown) == sorted(item["message_id"] for item in api_rows["items"])
        codes = await page.locator("#search-results .diagnosis-code").all_inner_texts()
        assert codes and all(code.startswith("bounce.") for code in codes), codes
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "search-1400.png"), full_page=True)
        # The export link downloads the same rows as the API pages through.
        href = await page.locator("#search-export a.export-csv").get_attribute("href")
        assert href == "/v1/messages?domain=gmail.com&format=csv"
        exported = await page.request.get(server.base + href)
        assert exported.ok
        ids = {row["message_id"] for row in csv.DictReader(io.StringIO(await exported.text()))}
        assert ids == set(shown)
        # The form narrows further: any filter the API takes.
        await page.select_option("#search-status", "delivered")
        await page.click("#search-form button[type=submit]")
        await expect(page).to_have_url(f"{server.base}/?search=1&status=delivered&domain=gmail.com")
        await expect(page.locator("#search-results .search-count")).to_have_text(
            "no message matches", timeout=5_000
        )
        # A status counter opens the search for its status.
        await page.goto(server.base + "/")
        await page.locator(".counter", has=page.locator("#count-bounced")).click()
        await expect(page).to_have_url(f"{server.base}/?search=1&status=bounced")
        await expect(page.locator("#search-results .search-count")).to_have_text(
            "6 message(s)", timeout=5_000
        )
        # A refused query says why.
        await page.goto(f"{server.base}/?search=1&since=yesterday")
        await expect(page.locator("#search-results")).to_contain_text(
            "Search refused", timeout=5_000
        )
        # 400 px: usable, the table scrolls inside its panel, not the page.
        narrow = await browser.new_page(viewport={"width": 400, "height": 900})
        await narrow.goto(f"{server.base}/?search=1&domain=gmail.com")
        await expect(narrow.locator("#search-results .search-count")).to_have_text(
            "6 message(s)", timeout=5_000
        )
        assert await no_page_scroll(narrow)
        await narrow.screenshot(path=str(ARTIFACTS / "search-400.png"), full_page=True)
        await browser.close()
