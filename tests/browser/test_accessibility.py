"""#27: axe-core (from the npm registry, vendored under tests/browser/vendor/, injected
here) finds no serious or critical violation on any view of the page, signed out
(the sign-in form) or in, at 1400 and 400 px."""

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
from tests.support import ses
from tests.support.serving import serving

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

AXE = Path(__file__).parent / "vendor" / "axe-core"
VERSION = "4.14.1"
VIEWS = [
    "/",
    f"/?message={BOUNCED}",
    "/?recipient=who@gmail.com",
    "/?search=1&status=bounced",
    "/?suppressions=1",
    "/?alerts=1",
]


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
        for width in (1400, 400):
            context = await browser.new_context(viewport={"width": width, "height": 900})
            signed_out = await context.new_page()
            await signed_out.goto(server.base + "/")
            await signed_out.wait_for_selector("#signin", state="visible")
            found[(width, "sign-in")] = await serious(signed_out)
            page = await sign_in(context, server.base, WRITE_TOKEN)
            for view in VIEWS:
                await page.goto(server.base + view)
                await page.wait_for_load_state("networkidle")
                await asyncio.sleep(0.5)  # the view's own fetches render
                found[(width, view)] = await serious(page)
            await context.close()
        await browser.close()
    assert {key: value for key, value in found.items() if value} == {}
