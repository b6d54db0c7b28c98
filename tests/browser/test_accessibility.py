"""#27: every view of the page, signed out (the sign-in form) or in, at 1400 and
400 px: axe-core (from the npm registry, vendored under tests/browser/vendor/,
injected here) finds no serious or critical violation, and the page never scrolls
sideways (wide tables scroll inside their panels). A screenshot of each goes to
test-artifacts/ for people to look at."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from tests.browser.test_list_views import traffic
from tests.browser.test_message_page import (
    BOUNCED,
    WRITE_TOKEN,
    hard_bounce,
    launch,
    settings,
    sign_in,
)
from tests.browser.test_search_view import no_page_scroll
from tests.browser.test_status_page import ARTIFACTS
from tests.support import ses
from tests.support.serving import serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

AXE = Path(__file__).parent / "vendor" / "axe-core"
VERSION = "4.14.1"
VIEWS = {
    "status": "/",
    "message": f"/?message={BOUNCED}",
    "recipient": "/?recipient=who@gmail.com",
    "search": "/?search=1&status=bounced",
    "suppressions": "/?suppressions=1",
    "alerts": "/?alerts=1",
}


async def serious(page) -> list[tuple[str, str, int]]:
    await page.add_script_tag(content=(AXE / "axe.min.js").read_text())
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        (violation["id"], violation["impact"], len(violation["nodes"]))
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def test_axe_core_is_vendored_with_its_licence_and_version() -> None:
    assert json.loads((AXE / "package.json").read_text())["version"] == VERSION
    assert (AXE / "LICENSE").is_file()


async def test_no_view_has_a_serious_or_critical_accessibility_violation() -> None:
    async with serving(settings()) as server, async_playwright() as p:
        headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
        now = int(time.time() * 1000)
        async with httpx.AsyncClient(base_url=server.base, headers=headers) as client:
            body = ses.dumps(*hard_bounce(now), *traffic(now))
            assert (await client.post("/v1/events", content=body)).status_code == 202
        browser = await launch(p)
        found = {}
        scrolled = []
        ARTIFACTS.mkdir(exist_ok=True)
        for width in (1400, 400):
            context = await browser.new_context(viewport={"width": width, "height": 900})
            signed_out = await context.new_page()
            await signed_out.goto(server.base + "/")
            await signed_out.wait_for_selector("#signin", state="visible")
            found[(width, "sign-in")] = await serious(signed_out)
            await signed_out.screenshot(path=str(ARTIFACTS / f"view-sign-in-{width}.png"))
            page = await sign_in(context, server.base, WRITE_TOKEN)
            for name, view in VIEWS.items():
                await page.goto(server.base + view)
                await page.wait_for_load_state("networkidle")
                await asyncio.sleep(0.5)  # the view's own fetches render
                found[(width, name)] = await serious(page)
                if not await no_page_scroll(page):
                    scrolled.append((width, name))
                await page.screenshot(path=str(ARTIFACTS / f"view-{name}-{width}.png"))
            await context.close()
        await browser.close()
    assert {key: value for key, value in found.items() if value} == {}
    assert scrolled == []
